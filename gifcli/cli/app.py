"""The gif command line: parse -> load -> call -> save -> print. Nothing else.

Only this package imports typer and rich. Library errors (GifError) become one line on stderr
and exit code 1 (2 for usage errors); tables go to stdout (stderr when stdout carries JSON),
progress bars to stderr. No user-supplied text is ever read as rich markup.
"""
import dataclasses
import functools
import inspect
import os
import sys
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from ..errors import GifError, UsageError

app = typer.Typer(
    name="gif",
    help="Make a trained PyTorch classifier forget data with Generalized Influence Functions (GIF).\n\n"
    "Steps chain through files: select -> influence -> apply -> evaluate; remove-class and remove-samples "
    "run them all. Exit codes: 0 ok, 1 a failure or a gate not passed, 2 a usage error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _is_tty(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):
        return False


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    if stream is None:  # a closed stream (`>&-`): print nowhere rather than fail
        return Console(file=open(os.devnull, "w"))
    # piped output (CI logs, files) gets a wide table instead of rich's 80-column default
    return Console(stderr=stderr, soft_wrap=True, width=None if _is_tty(stream) else 160, highlight=False)


class _Out:
    """Human output: stdout normally, stderr when stdout carries machine-readable output."""

    def __init__(self) -> None:
        self.console = _console(False)

    def to_stderr(self) -> None:
        self.console = err

    def print(self, *objects: Any) -> None:
        if main_process():
            self.console.print(*[Text(one_line(o)) if isinstance(o, str) else o for o in objects])


err = _console(True)
out = _Out()


def say(text: str) -> None:
    """A plain line on the human output (never parsed as markup)."""
    out.print(text)


def warn(text: str) -> None:
    if main_process():
        err.print(Text.assemble(("warning: ", "yellow"), one_line(text)))


def main_process() -> bool:
    """Whether this process prints: always, except under torchrun, where rank 0 alone does (also
    before the process group is joined, from torchrun's RANK)."""
    from .. import dist

    d = dist.current()
    if d.enabled:
        return d.is_main
    return int(os.environ.get("RANK", "0")) == 0 if dist.launched_by_torchrun() else True


def one_line(text: str) -> str:
    """A message as one line: control characters (a newline in a file name) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _fail_line(message: str) -> None:
    err.print(Text.assemble(("error: ", "red"), one_line(message)), soft_wrap=True)


def _rank() -> int:
    from .. import dist

    return dist.current().rank


def handled(fn: Callable) -> Callable:
    """GifError -> one line and its exit code; anything else -> one line too (GIF_DEBUG shows it)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .. import dist
        from ..io import files

        files.reset_written()
        try:
            return fn(*args, **kwargs)
        except GifError as exc:
            _exit(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            left = files.written()
            note = ("no output file was written" if not left else
                    "files already complete: " + ", ".join(str(p) for p in left))
            if main_process():
                err.print(Text.assemble(("interrupted ", "red"), one_line(f"({note}; no partial file is left)")))
            raise typer.Exit(130)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # an unexpected failure: still one line unless GIF_DEBUG is set
            if os.environ.get("GIF_DEBUG"):
                raise
            text = str(exc).strip().splitlines()
            posted = dist.current().failure(2.0) if dist.current().enabled else None
            if posted is not None:  # another rank failed first: its error is the one to report
                _exit(posted["message"], int(posted["exit_code"]), post=False)
            _exit(f"{type(exc).__name__}: {text[0] if text else ''} (set GIF_DEBUG=1 for a traceback)", 1)
        finally:
            dist.shutdown()

    return wrapper


def _exit(message: str, code: int, post: bool = True) -> None:
    from .. import dist

    d = dist.current()
    if d.enabled and post:
        d.post_failure(message, code)
    if main_process():  # one line per run: rank 0 prints it, whichever rank failed
        _fail_line(message)
    raise typer.Exit(code)


def single_process(command: str) -> None:
    """Commands without a data-parallel form refuse torchrun rather than run N times."""
    from ..dist import launched_by_torchrun

    if launched_by_torchrun():
        raise UsageError(f"gif {command} runs in one process; launch it without torchrun")


# ---------------------------------------------------------------------------------------------
# progress
class Bars:
    """A ProgressFn (stage, done, total, info) shown as rich progress bars on stderr."""

    LABELS = {"select": "select J", "solve": "solve", "sweep": "scale sweep", "evaluate": "evaluate",
              "compare": "compare", "lanczos": "lanczos", "train": "training", "unlearn": "unlearn"}

    def __init__(self) -> None:
        enabled = _is_tty(sys.stderr) or "GIF_PROGRESS" in os.environ
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err,
                                 transient=False, disable=not enabled)
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> "Bars":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: Optional[int], info: str) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(self.LABELS.get(stage, stage), total=total, info="")
        self.progress.update(self.tasks[stage], completed=done, total=total, info=info)

    def train(self, epochs: int):
        def cb(epoch, epochs_, step, steps, loss, acc):
            self("train", 0, None, "")
            self.progress.update(self.tasks["train"], completed=epoch - 1 + step / steps, total=epochs,
                                 info=f"epoch {epoch}/{epochs_} loss {loss:.4f} acc {100 * acc:.2f}%")

        return cb


# ---------------------------------------------------------------------------------------------
# option injection: the unlearning options come from UnlearnArgs' fields (one place for their help)
def _parse_size(text: str) -> float:
    units = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}
    t = text.strip().lower()
    for suffix in sorted(units, key=len, reverse=True):
        if t.endswith(suffix) or t.endswith(suffix + "b"):
            num = t[: -len(suffix)] if t.endswith(suffix) else t[: -len(suffix) - 1]
            try:
                return float(num) * units[suffix]
            except ValueError:
                break
    try:
        return float(t)
    except ValueError:
        raise UsageError(f"--memory-budget must be a size such as 2e9, 512MiB or 8G, got {text!r}") from None


_CLI_TYPES: dict[str, tuple[Any, str]] = {
    # field -> (CLI type, option name)
    "method": (str, "--method"), "criterion": (str, "--criterion"), "ratio": (float, "--ratio"),
    "threshold": (Optional[float], "--threshold"), "output_score": (str, "--output-score"), "seed": (int, "--seed"),
    "solver": (str, "--solver"), "tol": (float, "--tol"), "max_iter": (int, "--max-iter"),
    "damping": (float, "--damping"), "weight_decay": (str, "--weight-decay"), "recurrence": (str, "--recurrence"),
    "hvp_mode": (str, "--hvp-mode"), "memory_budget": (Optional[str], "--memory-budget"),
    "hessian_samples": (int, "--hessian-samples"), "hessian_data": (str, "--hessian-data"),
    "scales": (str, "--scale"), "scale_criterion": (Optional[str], "--scale-criterion"),
}
SELECT_OPTIONS = ("criterion", "ratio", "seed", "threshold", "output_score")
SOLVE_OPTIONS = ("method", "solver", "tol", "max_iter", "damping", "weight_decay", "recurrence", "hvp_mode",
                 "memory_budget", "hessian_samples", "hessian_data", "seed")
ALL_OPTIONS = tuple(dict.fromkeys(("method",) + SELECT_OPTIONS + SOLVE_OPTIONS + ("scales", "scale_criterion")))


def unlearn_args(values: dict[str, Any]):
    """UnlearnArgs from CLI option values (strings parsed, defaults for what is absent)."""
    from ..core.args import UnlearnArgs
    from ..core.steps import parse_scales

    v = dict(values)
    if "weight_decay" in v and v["weight_decay"] != "auto":
        try:
            v["weight_decay"] = float(v["weight_decay"])
        except ValueError:
            raise UsageError(f"--weight-decay must be 'auto' or a number, got {v['weight_decay']!r}") from None
    if v.get("memory_budget") is not None:
        v["memory_budget"] = _parse_size(v["memory_budget"])
    if "scales" in v:
        scales = parse_scales(v["scales"])
        v["scales"] = tuple(scales) if scales is not None else None
    return UnlearnArgs(**v)


def with_options(names: tuple[str, ...], defaults: Optional[dict] = None, helps: Optional[dict] = None):
    """Add UnlearnArgs' options ``names`` to a command; it receives them as ``uargs: UnlearnArgs``."""
    from ..core.args import UnlearnArgs

    fields = {f.name: f for f in dataclasses.fields(UnlearnArgs)}
    defaults, helps = defaults or {}, helps or {}

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        params = [p for p in sig.parameters.values() if p.name != "uargs"]
        for name in names:
            typ, opt = _CLI_TYPES[name]
            f = fields[name]
            default = defaults.get(name, "auto" if name == "scales" else f.default)
            if name == "weight_decay" and not isinstance(default, str):
                default = f"{default:g}"
            annotation = Annotated[typ, typer.Option(opt, help=helps.get(name, f.metadata["help"]))]
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=annotation))

        @functools.wraps(fn)
        def wrapper(**kwargs):
            values = {n: kwargs.pop(n) for n in names}
            kwargs["uargs"] = values
            return fn(**kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        return wrapper

    return deco


def version_callback(value: bool) -> None:
    if value:
        from .. import __version__

        say(f"gif {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                          help="Print gif's version and exit.")] = False,
) -> None:
    """Make a trained PyTorch classifier forget data with Generalized Influence Functions (GIF)."""


def main() -> None:
    """The ``gif`` entry point: Typer's own usage errors (unknown option, bad value) become one line too."""
    from . import commands, more  # noqa: F401  (register the commands)

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
