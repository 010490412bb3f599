import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


import os
from pathlib import Path

from tests.fakedata import write_fake_mnist

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_data_env(monkeypatch):
    # tests name their data explicitly; never pick up the developer's GIF_DATA_DIR by accident
    monkeypatch.delenv("GIF_DATA_DIR", raising=False)
    monkeypatch.delenv("GIF_DEBUG", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory) -> Path:
    return write_fake_mnist(tmp_path_factory.mktemp("fake_mnist"))
