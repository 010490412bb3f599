"""gif audit on a tiny model: the forgetting score orders doing nothing below retraining, the model
store is reused by a second method and resumes a killed audit, and the record says what N was."""
import json

import pytest
import torch
import yaml

from gifcli.data.tensorfile import write_tensors

from .conftest import invoke

MODELS = 4


@pytest.fixture(scope="module")
def memorising(tmp_path_factory):
    """A tensors dataset whose forget set is 40 training images given wrong labels: a model trained on
    them memorises them, one trained without them does not know them."""
    d = tmp_path_factory.mktemp("audit")
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 64, generator=g) * 3
    y = torch.randint(0, 4, (700,), generator=g)
    x = centers[y] + torch.randn(700, 64, generator=g)
    forget = torch.arange(0, 600, 15)  # 40 training indices
    y_train = y[:600].clone()
    y_train[forget] = (y_train[forget] + 1) % 4  # wrong labels: only memorising fits them
    data = d / "data.safetensors"
    write_tensors(data, x[:600].contiguous(), y_train, x[600:].contiguous(), y[600:].clone())
    cfg = d / "recipe.yaml"
    cfg.write_text(yaml.safe_dump({"model": "mlp", "hidden": 64, "dataset": f"tensors:{data}", "epochs": 40,
                                   "batch_size": 32, "lr": 0.05, "weight_decay": 0.0, "scheduler": "none",
                                   "seed": 0}))
    forget_file = d / "forget.txt"
    forget_file.write_text("\n".join(str(int(i)) for i in forget) + "\n")
    return {"dir": d, "cfg": cfg, "forget": forget_file}


def audit(runner, memorising, method, out, *extra):
    r = invoke(runner, ["audit", "--config", memorising["cfg"], "--forget", memorising["forget"], "--method", method,
                        "--models", MODELS, "--store", memorising["dir"] / "store", "--out-dir", out, "--no-plot",
                        "--device", "cpu", *extra])
    assert r.exit_code == 0, r.output
    return json.loads((out / "audit.json").read_text()), r.output


def test_doing_nothing_scores_below_retraining_and_the_store_is_reused(runner, memorising, tmp_path):
    unedited, output = audit(runner, memorising, "unedited", tmp_path / "u")
    assert unedited["store"]["trained_now"] == 2 * MODELS and unedited["models_per_side"] == MODELS
    assert "at the same N (here 4" in output and "forget score F" in output
    retrain, _ = audit(runner, memorising, "retrain", tmp_path / "r")
    assert retrain["store"]["trained_now"] == 0  # the originals and the retrained models are reused
    assert retrain["forget_score"] > unedited["forget_score"]
    # the unedited models memorised the wrong labels: every example is told apart from the retrained ones
    assert unedited["forget_score"] <= 0.1
    assert len(unedited["epsilons"]) == unedited["forget_in_training"] == 40 - len(
        unedited["forget_left_out_in_validation"])
    ratio = unedited["retain_accuracy"]["unlearned"] / unedited["retain_accuracy"]["retrained"]
    assert unedited["final_score"] == pytest.approx(unedited["forget_score"] * ratio *
                                                    unedited["test_accuracy"]["ratio"], rel=1e-12)


def test_a_killed_audit_resumes_from_the_store(runner, memorising, tmp_path):
    store = memorising["dir"] / "store" / "models"
    first, _ = audit(runner, memorising, "unedited", tmp_path / "first")
    victims = [store / first["store"]["retrained"][0], store / first["store"]["unlearned"][1]]
    for v in victims:  # as if the run had been killed before writing them
        v.unlink()
    again, _ = audit(runner, memorising, "unedited", tmp_path / "again")
    assert again["store"]["trained_now"] == 1 and all(v.exists() for v in victims)
    assert again["forget_score"] == first["forget_score"] and again["epsilons"] == first["epsilons"]


def test_a_store_model_that_is_not_the_recorded_one_is_refused_by_name(runner, memorising, tmp_path):
    """An original model in the store replaced by another valid checkpoint (here: a retrained one copied
    over it) is read back against the sha256 recorded when it was made: the audit refuses it by name
    instead of scoring a model other than the one it names."""
    import shutil

    from .conftest import refused

    store = memorising["dir"] / "store" / "models"
    first, _ = audit(runner, memorising, "unedited", tmp_path / "first")
    original = store / first["store"]["originals"][0]
    shutil.copyfile(store / first["store"]["retrained"][0], original)
    out = tmp_path / "second"
    r = invoke(runner, ["audit", "--config", memorising["cfg"], "--forget", memorising["forget"], "--method",
                        "unedited", "--models", MODELS, "--store", memorising["dir"] / "store", "--out-dir", out,
                        "--no-plot", "--device", "cpu"])
    refused(r, "not the model recorded there")
    assert original.name in r.output and not (out / "audit.json").exists()
