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
    for cmd, own in ((["remove-class"], ("--label", "--scale", "--newton-steps")),
                     (["influence"], ("--mask", "--solver", "--hessian-samples")),
                     (["backdoor", "recover"], ("--poison", "--scale"))):
        r = invoke(runner, [*cmd, "--help"])
        assert r.exit_code == 0, r.output
        missing = [o for o in own if o not in r.output]
        assert not missing, f"gif {' '.join(cmd)} --help lacks {missing}"


def _main(monkeypatch, capsys, argv):
    from gifcli.cli import main

    monkeypatch.setattr("sys.argv", ["gif", *argv])
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_entry_point_usage_errors_are_one_line(monkeypatch, capsys):
    """Typer's own parse errors (not only gif's) print one line and exit 2 from `gif`."""
    for argv, needle in ((["remove-class", "--out", "x"], "No such option: --out"),
                         (["remove-class", "--ratio", "abc"], "--ratio"),
                         (["remove-class", "--label"], "requires an argument"),
                         (["nosuch"], "No such command")):
        code, out, err = _main(monkeypatch, capsys, argv)
        assert code == 2 and needle in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("error:"), err
        assert "Traceback" not in err and out == ""
    code, out, _ = _main(monkeypatch, capsys, ["--help"])
    assert code == 0 and "remove-class" in out
