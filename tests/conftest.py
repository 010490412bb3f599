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
