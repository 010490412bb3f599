"""Every registered method through every command that takes --method, on tiny data.

A method joins this matrix by being registered: the list comes from the registry, never from a
list written here. Each cell must exit 0, print its table and result line, write a report that
names the method and its chosen hyper-parameters, and an edited checkpoint that ``gif evaluate``
(or ``gif backdoor evaluate``) reads and that ``gif verify`` checks as far as the method allows.
"""
import json
from pathlib import Path

import pytest
import yaml

from gifcli.core.methods import METHODS
from tests.fakedata import write_fake_mnist

from .conftest import invoke

ALL_METHODS = METHODS.names()
# a short scale grid keeps the influence methods' sweeps quick on tiny data (the sweep itself is
# tested elsewhere); baselines search their own recorded grids
FAST = ["--hessian-samples", 64, "--scale", "0.5,1,2"]


def fast(method: str) -> list:
    return FAST if method in ("gif", "fif", "pif", "if", "grad") else []


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    return write_fake_mnist(tmp_path_factory.mktemp("quiet_matrix"), n_train=400, n_test=100, noise=8, seed=5)


@pytest.fixture(scope="module")
def models(runner, quiet, tmp_path_factory):
    d = tmp_path_factory.mktemp("matrix")
    cfg = d / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model": "mlp", "hidden": 16, "dataset": "mnist", "epochs": 3, "batch_size": 32,
                                   "lr": 0.05, "weight_decay": 5e-3, "scheduler": "none", "seed": 0}))
    clean, bd, poison = d / "clean.safetensors", d / "bd.safetensors", d / "poison.json"
    steps = [["train", "--config", cfg, "--out", clean],
             ["backdoor", "poison", "--fraction", 0.3, "--target-label", 4, "--seed", 1, "--out", poison],
             ["backdoor", "train", "--poison", poison, "--config", cfg, "--out", bd]]
    for args in steps:
        extra = ["--device", "cpu"] if args[0] == "train" or args[1] == "train" else []
        r = invoke(runner, [*args, *extra, "--data-dir", quiet])
        assert r.exit_code == 0, r.output
    forget = d / "forget.txt"
    forget.write_text("\n".join(str(i) for i in range(0, 400, 9)) + "\n")
    return {"clean": clean, "bd": bd, "poison": poison, "forget": forget}


def command(kind: str, method: str, models: dict, out) -> tuple[list, object]:
    """(the command line, the edited checkpoint it writes)."""
    if kind == "remove-class":
        return ["remove-class", "--label", 3, "--model", models["clean"], "--out-dir", out], out / "edited.safetensors"
    if kind == "remove-samples":
        return (["remove-samples", "--forget", models["forget"], "--model", models["clean"], "--out-dir", out],
                out / "edited.safetensors")
    return (["backdoor", "recover", "--poison", models["poison"], "--model", models["bd"], "--run-dir", out,
             "--out", out / "recovered.safetensors"], out / "recovered.safetensors")


@pytest.mark.parametrize("kind", ["remove-class", "remove-samples", "backdoor-recover"])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_runs_from_every_command(runner, quiet, models, tmp_path, method, kind):
    out = tmp_path / "run"
    args, edited = command(kind, method, models, out)
    r = invoke(runner, [*args, "--method", method, *fast(method), "--device", "cpu", "--data-dir", quiet])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and "error" not in r.output.lower(), r.output
    rows = ("backdoored", "recovered") if kind == "backdoor-recover" else ("base", "edited")
    assert all(f"│ {row}" in r.output for row in rows), r.output  # the table
    assert f": {method}" in r.output, r.output  # the result line names the method ...
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == method and report["edited"] is not None
    for key, value in report["hyper"].items():  # ... and its chosen hyper-parameters, as the report has them
        if key != "search_budget":  # a list (a multi-step edit's scales) is printed as a/b/c
            shown = "/".join(format(v, "g") for v in value) if isinstance(value, list) else format(value, "g")
            assert f"{key.replace('_', ' ')} {shown}" in r.output, (key, r.output)
    assert ("scale" in report["hyper"]) == ("scale_choice" in report)
    assert all(Path(f["path"]).is_file() for f in report["files"].values())

    if kind == "backdoor-recover":
        ev = ["backdoor", "evaluate", "--poison", models["poison"], "--model", edited]
    else:
        ev = ["evaluate", "--model", edited, "--forget-label", 3, "--no-mia"]
    r = invoke(runner, [*ev, "--device", "cpu", "--data-dir", quiet])
    assert r.exit_code == 0, r.output

    r = invoke(runner, ["verify", edited])
    assert r.exit_code == 0, r.output
    assert "base model sha256" in r.output, r.output
    strict = invoke(runner, ["verify", edited, "--strict"])
    if "influence" in report["files"]:
        assert "re-derived" in r.output and "not checked" not in r.output, r.output
    if "not checked" in r.output:  # what the method cannot re-derive is named, and --strict refuses it
        assert f"method '{method}' stores no edit vector" in r.output, r.output
        assert strict.exit_code == 1 and "cannot prove" in strict.output, strict.output
    else:
        assert strict.exit_code == 0, strict.output


def test_a_failure_after_the_method_leaves_no_run_folder(runner, quiet, models, tmp_path, monkeypatch):
    """What the CLI prints is built before the files: a failure there writes nothing."""
    from gifcli.cli import edit as commands

    def broken(result, args):
        raise RuntimeError("the result line could not be formatted")

    monkeypatch.setattr(commands, "method_summary", broken)
    out = tmp_path / "run"
    r = invoke(runner, ["remove-class", "--label", 3, "--model", models["clean"], "--out-dir", out, "--method", "ssd",
                        "--device", "cpu", "--data-dir", quiet])
    assert r.exit_code == 1, r.output
    assert not (out / "report.json").exists() and not (out / "edited.safetensors").exists()


def test_kfac_preconditioner_is_recorded_and_the_edit_verifies(runner, quiet, models, tmp_path):
    out = tmp_path / "run"
    r = invoke(runner, ["remove-class", "--label", 3, "--model", models["clean"], "--out-dir", out, "--device", "cpu",
                        "--preconditioner", "kfac", *FAST, "--data-dir", quiet])
    assert r.exit_code == 0, r.output
    assert "converged" in r.output, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["args"]["preconditioner"] == "kfac"
    info = report["influence"]
    for step in info["steps"]:
        assert step["stats"]["unpreconditioned_residual"] < 1.0
    assert info["preconditioner"]["fisher"] == "sampled" and info["preconditioner"]["whole_units"] > 0
    strict = invoke(runner, ["verify", out / "edited.safetensors", "--strict"])
    assert strict.exit_code == 0, strict.output
    bad = invoke(runner, ["remove-class", "--label", 3, "--model", models["clean"], "--out-dir", tmp_path / "bad",
                          "--device", "cpu", "--preconditioner", "kfac", "--solver", "exact", "--data-dir", quiet])
    assert bad.exit_code == 2 and "Traceback" not in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output
    assert not (tmp_path / "bad").exists()
