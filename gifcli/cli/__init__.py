"""The gif command line (Typer). ``gif`` runs :func:`main`."""
import importlib
import importlib.util
import os
import sys
from pathlib import Path

from ..errors import UsageError
from .app import _fail_line, app

# register the commands, in --help's order  # isort: skip
from . import train, chain, evaluate, edit, backdoor, compare, spectrum, audit, ledger  # noqa: E402,F401  # isort: skip

PLUGINS_ENV = "GIF_PLUGINS"


def load_plugins() -> None:
    """Import the plug-ins the user names in $GIF_PLUGINS (os.pathsep-separated module names or
    .py files): their methods, architectures or dataset kinds register themselves. Nothing else of
    the user's runs unless named."""
    for entry in filter(None, os.environ.get(PLUGINS_ENV, "").split(os.pathsep)):
        try:
            if entry.endswith(".py"):
                path = Path(entry)
                if not path.is_file():
                    raise UsageError(f"${PLUGINS_ENV}: plug-in file {entry} not found")
                spec = importlib.util.spec_from_file_location(f"gif_plugin_{path.stem}", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(entry)
        except UsageError as exc:
            _fail_line(str(exc))
            sys.exit(2)
        except Exception as exc:
            _fail_line(f"${PLUGINS_ENV}: plug-in {entry} failed to load ({type(exc).__name__}: {exc})")
            sys.exit(1)


def main() -> None:
    """The ``gif`` entry point: Typer's own usage errors (unknown option, bad value) become one line too."""
    load_plugins()
    try:
        code = app(standalone_mode=False)
    except Exception as exc:  # click's usage errors, duck-typed (Typer vendors its own click)
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            if type(exc).__name__ == "Abort":
                _fail_line("aborted")
                sys.exit(1)
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `gif` alone: the help was printed
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        _fail_line(f"{where}{exc.format_message()} (see --help)")
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["app", "load_plugins", "main"]
