"""gif backdoor on tiny synthetic data: exact poisoning, a working recovery, refused bad files."""
import json

import numpy as np
import pytest
import torch
import yaml

from gifcli.data.backdoor import add_trigger, choose_poisoned, trigger_pattern
from tests.fakedata import write_fake_mnist

from .conftest import invoke


def test_trigger_is_the_checkerboard():
    p = trigger_pattern(4, 4)
    expected = np.array([[0, 16, 0, 16], [16, 0, 16, 0], [0, 16, 0, 16], [16, 0, 16, 0]])
    assert np.array_equal(p, expected)


def test_trigger_clips_at_255():
    img = torch.tensor([[[[250, 250], [0, 255]]]], dtype=torch.uint8)  # (1, 1, 2, 2)
    out = add_trigger(img)
    assert out.dtype == torch.uint8
    assert out[0, 0].tolist() == [[250, 255], [16, 255]]  # 250+16 -> 255 (clipped), 0+16 -> 16


def test_poisoned_indices_are_numpys_choice():
    np.random.seed(1)
    legacy = np.sort(np.random.choice(60000, 18000, replace=False))
    assert np.array_equal(choose_poisoned(60000, 0.3, 1), legacy)
    assert not np.array_equal(choose_poisoned(60000, 0.3, 2), legacy)


@pytest.fixture(scope="module")
def quiet_mnist(tmp_path_factory):
    # low background noise so that a 16-level trigger is learnable by a tiny model
    return write_fake_mnist(tmp_path_factory.mktemp("quiet"), n_train=1500, n_test=300, noise=8, seed=3)


@pytest.fixture(scope="module")
def backdoored(runner, quiet_mnist, tmp_path_factory):
    d = tmp_path_factory.mktemp("bd")
    poison, cfg, model = d / "poison.json", d / "cfg.yaml", d / "bd.safetensors"
    r = invoke(runner, ["backdoor", "poison", "--fraction", 0.3, "--target-label", 4, "--seed", 1, "--out", poison,
                        "--data-dir", quiet_mnist])
    assert r.exit_code == 0, r.output
    # weight decay 5e-3 keeps the tiny model out of saturation; with 5e-4 its clean-loss Hessian is
    # nearly zero and the least-squares solve is dominated by near-null directions (README, notes)
    cfg.write_text(yaml.safe_dump({"model": "mlp", "hidden": 64, "dataset": "mnist", "epochs": 15, "batch_size": 32,
                                   "lr": 0.05, "weight_decay": 5e-3, "scheduler": "none", "seed": 0}))
    r = invoke(runner, ["backdoor", "train", "--poison", poison, "--config", cfg, "--out", model, "--device", "cpu",
                        "--data-dir", quiet_mnist])
    assert r.exit_code == 0, r.output
    return {"dir": d, "poison": poison, "model": model, "cfg": cfg}


def test_poison_file_records_everything(backdoored):
    doc = json.loads(backdoored["poison"].read_text())
    assert doc["format"] == "gif-poison" and doc["count"] == 450 and doc["train_size"] == 1500
    assert doc["target_label"] == 4 and doc["seed"] == 1 and doc["trigger"]["value"] == 16
    assert doc["indices"] == choose_poisoned(1500, 0.3, 1).tolist()


def test_recover_stops_the_trigger(runner, backdoored, quiet_mnist):
    d = backdoored["dir"]
    before, after, rec = d / "before.json", d / "after.json", d / "rec.safetensors"
    common = ["--poison", backdoored["poison"], "--data-dir", quiet_mnist]
    r = invoke(runner, ["backdoor", "evaluate", "--model", backdoored["model"], "--json", before, *common])
    assert r.exit_code == 0, r.output
    b = json.loads(before.read_text())
    assert b["attack_success_rate"] > 0.8, b  # the backdoor works
    r = invoke(runner, ["backdoor", "recover", "--model", backdoored["model"], "--out", rec, "--ratio", 0.3,
                        "--hessian-samples", 256, "--max-iter", 30, "--run-dir", d / "run", "--device", "cpu", *common])
    assert r.exit_code == 0, r.output
    r = invoke(runner, ["backdoor", "evaluate", "--model", rec, "--json", after, *common])
    assert r.exit_code == 0, r.output
    a = json.loads(after.read_text())
    assert a["attack_success_rate"] < 0.3 and a["attack_success_rate"] < b["attack_success_rate"] / 2, (b, a)
    assert a["bd_data_true_label_accuracy"] > b["bd_data_true_label_accuracy"] + 0.3, (b, a)
    report = json.loads((d / "run" / "report.json").read_text())
    assert report["influence"]["stats"]["iterations"] >= 1 and report["scale_choice"].startswith("validation")


@pytest.mark.parametrize("mutate,needle", [
    (lambda doc: "{not json", "not a readable poison"),
    (lambda doc: json.dumps({**doc, "format": "gif-mask"}), "not a gif poison"),
    (lambda doc: json.dumps({**doc, "indices": doc["indices"][1::-1] + doc["indices"][2:]}), "sorted"),
    (lambda doc: json.dumps({**doc, "indices": doc["indices"][:-1]}), "sha256"),
    (lambda doc: json.dumps({**doc, "indices": doc["indices"][:-1] + [10 ** 9]}), "within"),
    (lambda doc: json.dumps({k: v for k, v in doc.items() if k != "target_label"}), "malformed"),
])
def test_bad_poison_files_are_refused(runner, backdoored, quiet_mnist, tmp_path, mutate, needle):
    doc = json.loads(backdoored["poison"].read_text())
    bad = tmp_path / "poison.json"
    bad.write_text(mutate(doc))
    out = tmp_path / "rec.safetensors"
    r = invoke(runner, ["backdoor", "recover", "--model", backdoored["model"], "--poison", bad, "--out", out,
                        "--run-dir", tmp_path / "run", "--device", "cpu", "--data-dir", quiet_mnist])
    assert r.exit_code == 1, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_model_trained_on_another_poison_is_refused(runner, backdoored, quiet_mnist, tmp_path):
    other = tmp_path / "other.json"
    r = invoke(runner, ["backdoor", "poison", "--fraction", 0.2, "--seed", 5, "--out", other, "--data-dir", quiet_mnist])
    assert r.exit_code == 0, r.output
    r = invoke(runner, ["backdoor", "recover", "--model", backdoored["model"], "--poison", other,
                        "--out", tmp_path / "r.safetensors", "--run-dir", tmp_path / "run", "--data-dir", quiet_mnist])
    assert r.exit_code == 1 and "another poison" in r.output, r.output
    # evaluate checks it too: its figures would be about data the model never saw poisoned
    r = invoke(runner, ["backdoor", "evaluate", "--model", backdoored["model"], "--poison", other,
                        "--json", tmp_path / "e.json", "--data-dir", quiet_mnist])
    assert r.exit_code == 1 and "another poison" in r.output, r.output
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("args,needle", [(["--fraction", 0], "--fraction"), (["--fraction", 1.0], "--fraction"),
                                         (["--target-label", 10], "--target-label")])
def test_bad_poison_arguments(runner, quiet_mnist, tmp_path, args, needle):
    out = tmp_path / "p.json"
    r = invoke(runner, ["backdoor", "poison", "--out", out, "--data-dir", quiet_mnist, *args])
    assert r.exit_code == 2 and needle in r.output, r.output
    assert not out.exists()
