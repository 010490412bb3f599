"""A user's model stopped early: a BatchNorm + residual net, a PNG ImageFolder, plain PyTorch.

Trained with a learning rate too high to settle (SGD lr 0.2, 4 epochs, no schedule), the net sits
far from a stationary point of its training loss (its mean gradient stands well out of the per-sample
gradients' noise). gif's defaults measure that, take Newton steps on the retained data instead of
the paper's one step, and so still forget the class and keep the other classes.
"""
import importlib.util
import json
import sys

import pytest
import torch

from tests.conftest import REAL_MNIST
from tests.userdata import digits, train_plain, write_image_folder, write_user_module

from .conftest import invoke

CLASSES = ["d0", "d3", "d5", "d8"]
FORGET = 3  # the 8s

pytestmark = pytest.mark.skipif(REAL_MNIST is None, reason="measured on real MNIST digits")


@pytest.fixture(scope="module")
def under_trained(runner, tmp_path_factory):
    root = tmp_path_factory.mktemp("offopt")
    module = write_user_module(root / "usermodels")
    arrays = digits(REAL_MNIST, 700, 200, [0, 3, 5, 8])
    folder = write_image_folder(root / "digits", arrays, CLASSES)
    spec = importlib.util.spec_from_file_location("netdef_offopt", module)
    netdef = importlib.util.module_from_spec(spec)
    sys.modules["netdef_offopt"] = netdef
    spec.loader.exec_module(netdef)
    x, y = arrays["train"]
    torch.manual_seed(0)
    model = train_plain(netdef.build_resbn(classes=4), (x.float().unsqueeze(1) / 255 - 0.5) / 0.5, y, epochs=4,
                        lr=0.2)
    torch.save(model.state_dict(), root / "model.pt")
    out = root / "imported.safetensors"
    r = invoke(runner, ["import", "--arch", f"{module}:build_resbn", "--arch-kwargs", '{"classes": 4}', "--weights",
                        root / "model.pt", "--dataset", f"imagefolder:{folder}", "--mean", "0.5", "--std", "0.5",
                        "--out", out, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    return out


def remove(runner, model, run, *options):
    r = invoke(runner, ["remove-class", "--label", FORGET, "--model", model, "--out-dir", run, "--device", "cpu",
                        *options])
    assert r.exit_code == 0, r.output
    return r.output, json.loads((run / "report.json").read_text())


def test_defaults_forget_the_class_and_keep_the_others(runner, under_trained, tmp_path):
    output, report = remove(runner, under_trained, tmp_path / "run")
    base, edited = report["base"], report["edited"]
    assert base["forget_test"]["accuracy"] > 0.85 and base["test"]["accuracy"] < 0.92  # off its optimum
    assert edited["forget_test"]["accuracy"] < 0.05
    assert edited["test"]["accuracy"] >= base["test"]["accuracy"] - 0.05
    stationarity = report["influence"]["stationarity"]
    assert stationarity["target"] == "remaining" and stationarity["ratio"] > 2
    measured = stationarity["coherence"]
    assert not measured["stationary"] and measured["coherence"] > measured["threshold"]
    assert report["decision"].startswith("off a stationary point") and report["decision"] in output
    assert report["hyper"]["steps"] >= 2  # re-linearised: the edit is more than the paper's one step
    assert "warning" not in output.lower()  # the default target is the one that holds off the optimum
    r = invoke(runner, ["verify", "--strict", tmp_path / "run" / "edited.safetensors"])
    assert r.exit_code == 0, r.output


def test_the_papers_step_falls_off_and_says_why(runner, under_trained, tmp_path):
    """The forget set's gradient alone, one step: the other classes fall (what the defaults avoid), and
    gif warns that the model is far from a stationary point."""
    output, report = remove(runner, under_trained, tmp_path / "run", "--target", "forget", "--newton-steps", "1")
    assert "off a stationary point" in output and "coherence" in output
    assert report["edited"]["test"]["accuracy"] < report["base"]["test"]["accuracy"] - 0.05
