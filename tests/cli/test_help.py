"""Every command and every option explains itself."""
import typer
from typer.core import TyperGroup, TyperOption

from gifcli.cli import app

from .conftest import invoke


def _commands(group: TyperGroup, prefix=()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, TyperGroup):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


def test_every_option_has_help():
    root = typer.main.get_command(app)
    names = []
    for path, cmd in _commands(root):
        names.append(" ".join(path))
        assert cmd.help, f"{path} has no description"
        for param in cmd.params:
            if isinstance(param, TyperOption) and param.name != "help":
                assert param.help and len(param.help) > 10, f"gif {' '.join(path)} {param.opts} lacks help"
    for expected in ("train", "select", "influence", "apply", "evaluate", "remove-class", "compare", "spectrum",
                     "backdoor poison", "backdoor train", "backdoor recover", "backdoor evaluate"):
        assert expected in names


def test_help_runs(runner):
    r = invoke(runner, ["--help"])
    assert r.exit_code == 0 and "remove-class" in r.output
    for cmd in (["remove-class"], ["influence"], ["backdoor", "recover"]):
        r = invoke(runner, [*cmd, "--help"])
        assert r.exit_code == 0 and "--" in r.output, r.output
