"""The shipped checkpoint on the real MNIST (../shared/data); skipped where it is absent."""
import json
from pathlib import Path

import pytest

from gifcli.data.datasets import search_path

from .conftest import invoke

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "checkpoints" / "mnist_cnn.safetensors"
CANDIDATES = [ROOT.parent / "shared" / "data", ROOT / "data"]
DATA = next((p for p in CANDIDATES if (p / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()), None)

pytestmark = pytest.mark.skipif(DATA is None, reason="real MNIST not found in ../shared/data or ./data")


def test_shipped_checkpoint_accuracy():
    from gifcli import load_checkpoint

    _, meta = load_checkpoint(CHECKPOINT)
    assert meta["arch"] == "cnn" and meta["test_accuracy"] >= 0.985


def test_chain_on_real_mnist(runner, tmp_path):
    mask, infl, edited, rep = (tmp_path / n for n in ("m.json", "i.safetensors", "e.safetensors", "r.json"))
    common = ["--data-dir", DATA]
    r = invoke(runner, ["select", "--model", CHECKPOINT, "--forget-label", 8, "--ratio", 0.1, "--out", mask, *common])
    assert r.exit_code == 0, r.output
    r = invoke(runner, ["influence", "--model", CHECKPOINT, "--mask", mask, "--forget-label", 8, "--hessian-samples", 256,
                        "--max-iter", 8, "--device", "cpu", "--out", infl, *common])
    assert r.exit_code == 0, r.output
    r = invoke(runner, ["apply", "--model", CHECKPOINT, "--influence", infl, "--scale", 16, "--out", edited])
    assert r.exit_code == 0, r.output
    r = invoke(runner, ["evaluate", "--model", edited, "--forget-label", 8, "--baseline", CHECKPOINT, "--json", rep,
                        *common])
    assert r.exit_code == 0, r.output
    report = json.loads(rep.read_text())
    assert report["forget"]["count"] == 974  # the test images of label 8
    assert report["forget"]["accuracy"] < report["baseline"]["forget"]["accuracy"] - 0.5
    assert report["test"]["accuracy"] > 0.9


def test_search_path_order(monkeypatch):
    monkeypatch.setenv("GIF_DATA_DIR", "/env/dir")
    assert [str(p) for p in search_path("/given")] == ["/given", "/env/dir", "data", "../shared/data"]
