"""The shipped checkpoint on the real MNIST: found through $GIF_DATA_DIR or ./data, as gif itself
looks (the tests also look beside the clone, where the project's machines keep it); the
data-dependent tests are skipped where it is absent."""
import json
import os
from pathlib import Path

import pytest

from gifcli.data.datasets import search_path

from .conftest import invoke

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "checkpoints" / "mnist_cnn.safetensors"
# read at import, before the autouse fixture clears GIF_DATA_DIR for the tests themselves
CANDIDATES = [Path(p) for p in (os.environ.get("GIF_DATA_DIR"), ROOT / "data", ROOT.parent / "shared" / "data") if p]
DATA = next((p for p in CANDIDATES if (p / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()), None)
needs_mnist = pytest.mark.skipif(DATA is None, reason="real MNIST not found in $GIF_DATA_DIR, ./data or ../shared/data")


@needs_mnist
def test_shipped_checkpoint_scores_what_it_records(runner, tmp_path):
    rep = tmp_path / "r.json"
    r = invoke(runner, ["evaluate", "--model", CHECKPOINT, "--json", rep, "--data-dir", DATA, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    report = json.loads(rep.read_text())
    from gifcli import load_checkpoint

    _, meta = load_checkpoint(CHECKPOINT)
    assert report["test"]["count"] == 10000
    assert report["test"]["accuracy"] >= 0.985  # measured now, on the real test set
    assert report["test"]["accuracy"] == pytest.approx(meta["test_accuracy"], abs=1e-9)


@needs_mnist
def test_remove_class_on_real_mnist(runner, tmp_path):
    folder = tmp_path / "run"
    r = invoke(runner, ["remove-class", "--label", 8, "--model", CHECKPOINT, "--hessian-samples", 256, "--max-iter", 10,
                        "--scale", "4,8,16,32,64", "--out-dir", folder, "--device", "cpu", "--data-dir", DATA])
    assert r.exit_code == 0, r.output
    report = json.loads((folder / "report.json").read_text())
    assert report["edited"]["forget_test"]["count"] == 974  # the test images of label 8
    assert report["edited"]["forget_test"]["accuracy"] < 0.2 < report["base"]["forget_test"]["accuracy"]
    assert report["edited"]["test"]["accuracy"] > 0.95


def test_search_path_order(monkeypatch):
    monkeypatch.setenv("GIF_DATA_DIR", "/env/dir")
    assert [str(p) for p in search_path("/given")] == ["/given", "/env/dir", "data"]
    monkeypatch.delenv("GIF_DATA_DIR")
    assert [str(p) for p in search_path(None)] == ["data"]
