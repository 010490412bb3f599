"""The method seam: a method written in its own file runs through every door (remove-class,
compare, the Python API, verify), and every CLI option of a method is generated from its fields."""
import dataclasses
import json

import pytest
import torch
import typer.main

from gifcli.cli import app
from gifcli.cli.options import _GENERATED, option_specs
from gifcli.core.args import COMMON
from gifcli.core.methods import METHODS
from .conftest import invoke
from tests.plugins import shrink_method


@pytest.fixture()
def shrink():
    shrink_method.register()
    yield shrink_method
    METHODS.unregister("shrink")


def test_a_method_in_its_own_file_runs_through_every_door(shrink, runner, tiny_model, fake_mnist, tmp_path):
    r = invoke(runner, ["remove-class", "--help"])
    assert "--shrink-factor" in r.output and "multiply the last Linear layer" in r.output

    run = tmp_path / "run"
    r = invoke(runner, ["remove-class", "--label", 3, "--model", tiny_model, "--method", "shrink", "--shrink-factor",
                        0.25, "--out-dir", run, "--device", "cpu", "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    assert "remove class 3: shrink, factor 0.25" in r.output
    report = json.loads((run / "report.json").read_text())
    assert report["args"]["factor"] == 0.25 and report["method"] == "shrink"
    from gifcli import load_checkpoint

    base, _ = load_checkpoint(tiny_model)
    edited, meta = load_checkpoint(run / "edited.safetensors")
    assert meta["edit"]["args"]["factor"] == 0.25 and meta["edit"]["method"] == "shrink"
    torch.testing.assert_close(shrink.last_linear(edited).weight, 0.25 * shrink.last_linear(base).weight,
                               rtol=0, atol=0)

    r = invoke(runner, ["verify", run / "edited.safetensors", "--strict"])
    assert r.exit_code == 0 and "last layer x 0.25 (re-derived)" in r.output, r.output

    r = invoke(runner, ["remove-class", "--label", 3, "--model", tiny_model, "--method", "gif", "--shrink-factor",
                        0.25, "--out-dir", tmp_path / "no", "--device", "cpu", "--data-dir", fake_mnist])
    assert r.exit_code == 2 and "--shrink-factor is an option of shrink" in r.output, r.output

    out = tmp_path / "cmp"
    r = invoke(runner, ["compare", "--model", tiny_model, "--forget-label", 3, "--methods", "shrink",
                        "--shrink-factor", 0.5, "--no-svc", "--no-plot", "--out-dir", out, "--device", "cpu",
                        "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(row["method"], row["hyper"]) for row in rows] == [("shrink", {"factor": 0.5})]

    import gifcli

    model, _ = load_checkpoint(tiny_model)
    x = torch.randn(40, 1, 28, 28)
    y = torch.arange(40) % 10
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = gifcli.unlearn(model, forget=(x[:5], y[:5]), train=(x[5:], y[5:]), validation=(x, y),
                            method="shrink", factor=0.1)
    assert result.outcome.hyper == {"factor": 0.1}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model is untouched
    assert gifcli.api.method_arguments("shrink") == {"factor": (0.5, "multiply the last Linear layer's weights by this")}


def registry_options() -> set[str]:
    """Every option the registry's arguments imply, computed here from the dataclasses themselves."""
    flags = {f"--{name.replace('_', '-')}" for name in COMMON}
    for _, method in METHODS.items():
        for f in dataclasses.fields(method.Args):
            flag = f.metadata.get("flag", f.name).replace("_", "-")
            flags.add(f"--{method.Args.cli_prefix}-{flag}" if method.Args.cli_prefix else f"--{flag}")
    return flags


def test_no_command_restates_a_method_argument_by_hand():
    """The generated options are the registry's, and no hand-written option of any command takes a
    name that belongs to a method's arguments (or, beside generated ones, to the common fields)."""
    assert {s.flag for s in option_specs()} == registry_options()
    method_dests = {s.dest for s in option_specs() if s.methods}
    generated_of = {fn.__name__: {s.dest for s in option_specs(fields)} for _, fn, fields, _ in _GENERATED}
    click_app = typer.main.get_command(app)
    commands = {}
    for name, cmd in click_app.commands.items():
        subs = getattr(cmd, "commands", None)
        for sub_name, sub in (subs or {name: cmd}).items():
            commands[f"{name} {sub_name}" if subs else name] = sub
    assert {"remove-class", "remove-samples", "backdoor recover", "compare", "select", "influence"} <= set(commands)
    for name, cmd in commands.items():
        fn = cmd.callback.__wrapped__ if hasattr(cmd.callback, "__wrapped__") else cmd.callback
        generated = generated_of.get(getattr(fn, "__name__", ""), set())
        hand = {p.name for p in cmd.params} - generated
        forbidden = method_dests | (set(COMMON) if generated else set())
        assert not hand & forbidden, f"gif {name} restates {sorted(hand & forbidden)} by hand"
        flags = {opt for p in cmd.params for opt in p.opts}
        if generated:
            assert {s.flag for s in option_specs() if s.dest in generated} - {"--method", "--seed"} <= flags


def test_a_method_registered_later_gets_its_options_and_loses_them_when_removed(runner):
    assert "--shrink-factor" not in invoke(runner, ["remove-samples", "--help"]).output
    shrink_method.register()
    try:
        assert "--shrink-factor" in invoke(runner, ["remove-samples", "--help"]).output
    finally:
        METHODS.unregister("shrink")
    assert "--shrink-factor" not in invoke(runner, ["remove-samples", "--help"]).output


def test_no_process_wide_state_is_left_behind(runner, tiny_model, fake_mnist, tmp_path):
    """The API works on a copy (the caller's model keeps its weights and its train mode), the
    random state is the caller's after training and unlearning, and --deterministic ends with the
    command."""
    import gifcli
    from gifcli import load_checkpoint

    model, _ = load_checkpoint(tiny_model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(60, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.arange(60) % 10
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    for method in ("gif", "finetune"):
        gifcli.unlearn(model, forget=(x[:6], y[:6]), train=(x[6:], y[6:]), validation=(x, y), method=method,
                       **({"hessian_samples": 32, "max_iter": 5} if method == "gif" else {}))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    assert not torch.are_deterministic_algorithms_enabled()
    r = invoke(runner, ["remove-class", "--label", 3, "--model", tiny_model, "--hessian-samples", 32, "--max-iter", 3,
                        "--scale", 1, "--deterministic", "--out-dir", tmp_path / "d", "--device", "cpu",
                        "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    assert not torch.are_deterministic_algorithms_enabled()
