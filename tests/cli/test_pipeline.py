"""The chained steps on tiny synthetic data: every file they write and how they refuse mixes."""
import json

import pytest
from safetensors import safe_open

from gifcli import load_checkpoint

from .conftest import invoke


@pytest.fixture(scope="module")
def chain(runner, tiny_model, fake_mnist, tmp_path_factory):
    d = tmp_path_factory.mktemp("chain")
    mask, infl, edited, report = d / "mask.json", d / "infl.safetensors", d / "edited.safetensors", d / "report.json"
    common = ["--data-dir", fake_mnist]
    r = invoke(runner, ["select", "--model", tiny_model, "--forget-label", 3, "--ratio", 0.2, "--out", mask, *common])
    assert r.exit_code == 0, r.output
    r = invoke(runner, ["influence", "--model", tiny_model, "--mask", mask, "--forget-label", 3, "--hessian-samples", 128,
                        "--max-iter", 30, "--tol", 1e-3, "--device", "cpu", "--out", infl, *common])
    assert r.exit_code == 0, r.output
    r = invoke(runner, ["apply", "--model", tiny_model, "--influence", infl, "--scale", 50, "--out", edited])
    assert r.exit_code == 0, r.output
    r = invoke(runner, ["evaluate", "--model", edited, "--forget-label", 3, "--baseline", tiny_model, "--json", report,
                        *common])
    assert r.exit_code == 0, r.output
    return {"dir": d, "mask": mask, "influence": infl, "edited": edited, "report": report, "model": tiny_model}


def test_checkpoint_metadata(tiny_model):
    model, meta = load_checkpoint(tiny_model)
    assert meta["format"] == "gif-checkpoint" and meta["arch"] == "mlp" and meta["dataset"] == "mnist"
    assert meta["input_shape"] == [1, 28, 28] and meta["num_classes"] == 10
    assert meta["train_config"]["hidden"] == 16 and 0.0 <= meta["test_accuracy"] <= 1.0
    assert len(meta["weights_sha256"]) == 64 and "command" in meta["provenance"]
    assert meta["test_accuracy"] > 0.5  # the fake classes are separable


def test_mask_file(chain):
    doc = json.loads(chain["mask"].read_text())
    _, meta = load_checkpoint(chain["model"])
    assert doc["format"] == "gif-mask" and doc["version"] == 1
    assert doc["model_sha256"] == meta["weights_sha256"]
    assert doc["criterion"] == "topk-outputs" and doc["ratio"] == 0.2 and doc["forget"]["label"] == 3
    total = sum(p["selected"] for p in doc["parameters"])
    assert total == doc["selected"] and abs(total / doc["total_parameters"] - 0.2) < 0.02
    for p in doc["parameters"]:
        assert sum(b - a for a, b in p["ranges"]) == p["selected"]


def test_influence_file(chain):
    with safe_open(str(chain["influence"]), "pt") as fh:
        meta = json.loads(fh.metadata()["gif"])
        delta, idx = fh.get_tensor("delta"), fh.get_tensor("indices")
    assert meta["format"] == "gif-influence" and meta["method"] == "gif" and meta["solver"] == "cg"
    assert delta.numel() == idx.numel() == meta["selected"]
    assert meta["hessian"]["samples"] == 128 and meta["stats"]["iterations"] >= 1
    assert meta["stats"]["hvp_products"] == 1 + 2 * meta["stats"]["iterations"]


def test_apply_moves_exactly_J(chain):
    import torch

    base, _ = load_checkpoint(chain["model"])
    edited, meta = load_checkpoint(chain["edited"])
    with safe_open(str(chain["influence"]), "pt") as fh:
        delta, idx = fh.get_tensor("delta"), fh.get_tensor("indices")
    a = torch.cat([p.detach().reshape(-1) for p in base.parameters()])
    b = torch.cat([p.detach().reshape(-1) for p in edited.parameters()])
    expected = a.clone()
    expected[idx] -= 50 * delta  # the sign convention: scale > 0 removes
    torch.testing.assert_close(b, expected)
    assert meta["edit"]["scale"] == 50 and meta["edit"]["base_model_sha256"] != meta["weights_sha256"]


def test_report_json(chain):
    rep = json.loads(chain["report"].read_text())
    assert rep["format"] == "gif-report" and rep["forget_label"] == 3 and rep["passed"] is True
    for k in ("forget", "test"):
        assert set(rep[k]) == {"count", "loss", "accuracy"}
    assert "baseline" in rep and 0.0 <= rep["f1"] <= 1.0


def test_evaluate_thresholds_gate(runner, chain, fake_mnist, tmp_path):
    report = tmp_path / "r.json"
    r = invoke(runner, ["evaluate", "--model", chain["model"], "--forget-label", 3, "--max-forget-acc", 0.0,
                        "--min-test-acc", 0.0, "--json", report, "--data-dir", fake_mnist])
    assert r.exit_code == 1, r.output
    assert "threshold violated" in r.output
    assert json.loads(report.read_text())["passed"] is False


def test_remove_class_runs_and_keeps_files(runner, tiny_model, fake_mnist, tmp_path):
    folder = tmp_path / "run"
    r = invoke(runner, ["remove-class", "--label", 3, "--model", tiny_model, "--hessian-samples", 128, "--max-iter", 20,
                        "--out-dir", folder, "--device", "cpu", "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    for name in ("mask.json", "influence.safetensors", "edited.safetensors", "report.json"):
        assert (folder / name).is_file()
    rep = json.loads((folder / "report.json").read_text())
    assert rep["scale_choice"].startswith("validation") and len(rep["validation_sweep"]) > 5
    best = max(rep["validation_sweep"], key=lambda s: s["f1"])
    assert rep["scale"] == best["scale"]
    # the scale maximises F1 on validation, which is a different split from the test report
    assert rep["edited"]["forget"]["accuracy"] < rep["base"]["forget"]["accuracy"]


@pytest.mark.parametrize("method", ["fif", "pif", "if"])
def test_other_methods(runner, chain, fake_mnist, tmp_path, method):
    out = tmp_path / f"{method}.safetensors"
    args = ["influence", "--model", chain["model"], "--forget-label", 3, "--method", method, "--hessian-samples", 64,
            "--max-iter", 5, "--device", "cpu", "--out", out, "--data-dir", fake_mnist]
    if method != "if":
        args += ["--mask", chain["mask"]]
    r = invoke(runner, args)
    assert r.exit_code == 0, r.output
    assert out.is_file()


def test_neumann_and_exact_solvers(runner, chain, fake_mnist, tmp_path):
    for solver in ("neumann", "exact"):
        out = tmp_path / f"{solver}.safetensors"
        r = invoke(runner, ["influence", "--model", chain["model"], "--mask", chain["mask"], "--forget-label", 3,
                            "--solver", solver, "--hessian-samples", 64, "--max-iter", 5, "--device", "cpu",
                            "--out", out, "--data-dir", fake_mnist])
        if solver == "exact":  # the tiny mlp has ~2.6k selected parameters: below the exact limit
            assert r.exit_code == 0, r.output
        else:
            assert r.exit_code == 0, r.output
        assert out.is_file()


def test_cifar10_code_path(runner, tmp_path):
    import yaml

    from tests.fakedata import write_fake_cifar

    root = write_fake_cifar(tmp_path / "data")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": "cnn", "dataset": "cifar10", "epochs": 1, "batch_size": 16, "seed": 0}))
    ckpt = tmp_path / "c.safetensors"
    r = invoke(runner, ["train", "--config", cfg, "--out", ckpt, "--data-dir", root, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    _, meta = load_checkpoint(ckpt)
    assert meta["input_shape"] == [3, 32, 32] and meta["dataset"] == "cifar10"
    r = invoke(runner, ["evaluate", "--model", ckpt, "--forget-label", 8, "--data-dir", root])
    assert r.exit_code == 0, r.output
