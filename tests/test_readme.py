"""The README runs as written: its Python example runs here; every shell block either runs in a test
or says why it is not run here (it is long, or it runs in a named test on that test's files)."""
import re
from pathlib import Path

import pytest

from tests.conftest import REAL_MNIST

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str):
    text = README.read_text()
    return [(m.group(1), m.group(2)) for m in
            re.finditer(r"(<!--[^>]*-->\s*)?```" + lang + r"\n(.*?)```", text, re.S)]


def test_every_shell_block_is_run_or_marked():
    blocks = _blocks("bash")
    assert blocks
    for marker, body in blocks:
        assert marker and ("long" in marker or "runs in tests/" in marker), body


def test_the_readme_is_short():
    assert len(README.read_bytes()) <= 8500


@pytest.mark.skipif(REAL_MNIST is None, reason="real MNIST not found")
def test_the_python_example_runs(monkeypatch):
    (marker, code), = [b for b in _blocks("python") if b[0] and "api-example" in b[0]]
    code = code.replace('root = "data"', f'root = "{REAL_MNIST}"')
    monkeypatch.chdir(README.parent)
    printed = []
    exec(compile(code, "README.md", "exec"), {"print": printed.append, "__name__": "readme"})
    metrics = printed[-1]
    assert metrics.count == 10000 and metrics.accuracy > 0.85  # every class but 8 is kept
