"""The method seam holds for gif's own methods too: outside ``gifcli/methods/`` no code speaks a
method's name, and a new option of gif's influence method, declared in its arguments dataclass
alone, reaches every place that takes method options."""
import ast
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from gifcli.core.methods import METHODS, arg

PACKAGE = Path(__file__).resolve().parents[2] / "gifcli"
ALLOWED = 2  # the default method of the commands and the API (core.args.DEFAULT_METHOD), `gif ledger retrain`


def method_name_constants(source: str, names: set[str]) -> list[int]:
    """Lines of string constants equal to a method name, less docstrings, dict keys and subscripts
    (``meta["gif"]``: a metadata namespace), and the product's name (``Typer(name="gif")``)."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            skip.add(id(body[0].value))
        if isinstance(node, ast.Dict):
            skip.update(id(k) for k in node.keys if k is not None)
        if isinstance(node, ast.Subscript):
            skip.add(id(node.slice))
        if isinstance(node, ast.keyword) and node.arg == "name" and isinstance(node.value, ast.Constant):
            skip.add(id(node.value))
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and n.value in names and id(n) not in skip]


def test_the_scan_counts_what_it_should():
    names = {"gif", "ssd"}
    src = ('"""gif module docstring"""\nx = "gif"\nd = {"ssd": 1}\nm = meta["gif"]\ny = ("ssd", "other")\n'
           'app = Typer(name="gif")\nif a.method == "ssd":\n    pass\n')
    assert method_name_constants(src, names) == [2, 5, 7]


def test_method_names_are_spoken_only_in_the_methods_package():
    names = set(METHODS.names())
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "methods":
            continue
        hits += [f"{path.relative_to(PACKAGE.parent)}:{line}" for line in method_name_constants(path.read_text(), names)]
    assert len(hits) <= ALLOWED, "method names outside gifcli/methods/: " + ", ".join(hits)


# ---------------------------------------------------------------------------------------------
# a new option, added in the influence method's Args alone
@pytest.fixture
def probed(monkeypatch):
    """The influence methods with one more field in their arguments (``--probe-level``), registered
    as a user's would be; the methods registered again as they were afterwards."""
    from gifcli.methods.influence import InfluenceArgs, InfluenceMethod

    @dataclass(frozen=True)
    class ProbedArgs(InfluenceArgs):
        probe_level: int = arg("a new option of the influence solve (the test's)", 3, choices=(1, 2, 3, 7),
                               group="solve")

    seen: list = []

    class Probed(InfluenceMethod):
        Args = ProbedArgs

        def unlearn(self, model, task, data, args, rt, ctx):
            seen.append(args.probe_level)
            raise SystemExit(0)  # the run got its arguments: nothing more to do

    before = {n: m for n, m in METHODS.items() if isinstance(m, InfluenceMethod)}  # they share one Args class
    for name in before:
        METHODS.register(name, Probed(name), replace=True)
    yield seen
    for name, method in before.items():
        METHODS.register(name, method, replace=True)


def test_a_new_option_reaches_every_place(probed, runner, tiny_model, fake_mnist, tmp_path, monkeypatch):
    from gifcli import api
    from gifcli.cli import app
    from gifcli.cli.compare import compare_config, compare_plan

    # remove-class: in its help and in the arguments the method runs with
    help_text = runner.invoke(app, ["remove-class", "--help"], terminal_width=200).output
    assert "--probe-level" in help_text
    r = runner.invoke(app, ["remove-class", "--label", "1", "--model", str(tiny_model), "--data-dir", str(fake_mnist),
                            "--device", "cpu", "--probe-level", "7", "--out-dir", str(tmp_path / "rc")])
    assert probed == [7], r.output
    bad = runner.invoke(app, ["remove-class", "--label", "1", "--model", str(tiny_model), "--probe-level", "5"])
    assert bad.exit_code == 2 and "--probe-level must be one of 1, 2, 3, 7" in bad.output
    # gif influence: a solve option, so the chain's influence step takes it
    assert "--probe-level" in runner.invoke(app, ["influence", "--help"], terminal_width=200).output
    assert "--probe-level" not in runner.invoke(app, ["select", "--help"], terminal_width=200).output
    # compare's YAML: the key, checked and converted as the option is
    cfg = tmp_path / "c.yaml"
    cfg.write_text("methods: gif\nprobe_level: 2\nratios: 0.1\n")
    plan = compare_plan(compare_config(cfg, {}), svc=False)
    assert plan.cells()[0].probe_level == 2
    cfg.write_text("methods: gif\nprobe_level: two\n")
    with pytest.raises(Exception, match="probe_level"):
        compare_config(cfg, {})
    # the Python API
    import torch
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 4
    with pytest.raises(SystemExit):
        api.unlearn(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 4)), forget_label=1,
                    train=(x, y), validation=(x, y), probe_level=1)
    assert probed == [7, 1]
    assert json.dumps(api.method_arguments()["probe_level"][0]) == "3"
