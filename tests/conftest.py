import os
from pathlib import Path

import pytest
import torch

from tests.fakedata import write_fake_mnist


@pytest.fixture(autouse=True)
def _seeded_and_isolated(monkeypatch):
    torch.manual_seed(0)
    # tests name their data explicitly; never pick up the developer's GIF_DATA_DIR by accident
    monkeypatch.delenv("GIF_DATA_DIR", raising=False)
    monkeypatch.delenv("GIF_DEBUG", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    yield


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory) -> Path:
    return write_fake_mnist(tmp_path_factory.mktemp("fake_mnist"))


ROOT = Path(__file__).resolve().parents[1]
# read at import, before the autouse fixture clears GIF_DATA_DIR for the tests themselves
_CANDIDATES = [Path(p) for p in (os.environ.get("GIF_DATA_DIR"), ROOT / "data", ROOT.parent / "shared" / "data") if p]
REAL_MNIST = next((p for p in _CANDIDATES if (p / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()), None)


@pytest.fixture(scope="session")
def digits_root(fake_mnist) -> Path:
    """Real MNIST where it is found (as gif looks for it), else the fake digits."""
    return REAL_MNIST or fake_mnist
