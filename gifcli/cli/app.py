"""The gif command line: parse -> load -> call -> save -> print. Nothing else.

Only this package imports typer and rich. Library errors (GifError) become one line on stderr
and exit code 1 (2 for usage errors); tables go to stdout (stderr when stdout carries JSON),
progress bars to stderr. No user-supplied text is ever read as rich markup.
"""
import functools
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
    """Human output: stdout normally, stderr when stdout carries machine-readable output (for the
    command that asked: every command starts on stdout again, see :func:`handled`)."""

    def __init__(self) -> None:
        self.console = _console(False)

    def to_stderr(self) -> None:
        self.console = err

    def reset(self) -> None:
        global err
        err = _console(True)
        self.console = _console(False)

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


def torch_deterministic() -> tuple[bool, Optional[str]]:
    import torch

    return torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")


def restore_deterministic(state: tuple[bool, Optional[str]]) -> None:
    import torch

    enabled, workspace = state
    torch.use_deterministic_algorithms(enabled)
    if workspace is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace


OUTPUT_FILES = ("out_path", "json_path", "junit")  # the parameters that name an output file
OUTPUT_FOLDERS = ("out_dir",)  # ... and an output folder


def handled(fn: Callable) -> Callable:
    """GifError -> one line and its exit code; anything else -> one line too (GIF_DEBUG shows it)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .. import dist
        from ..io import files

        out.reset()  # this command's consoles: stdout and stderr as they are now, nothing from a command before
        # --deterministic switches torch's deterministic mode for this command only
        deterministic = torch_deterministic()
        finished = False  # the command ran to its end (or its own exit): every rank settles before shutdown
        with files.write_log() as written:  # the files this command finishes: named if it is interrupted
            try:
                # an output that cannot be written is known before anything is computed
                for name in OUTPUT_FILES:
                    value = kwargs.get(name)
                    if value is not None and str(value) != files.STDIO:
                        files.check_writable(value)
                for name in OUTPUT_FOLDERS:
                    if kwargs.get(name) is not None:
                        files.check_folder_creatable(kwargs[name])
                result = fn(*args, **kwargs)
                finished = True
                return result
            except GifError as exc:
                _exit(str(exc), exc.exit_code)
            except KeyboardInterrupt:
                left = list(written)
                note = ("no output file was written" if not left else
                        "files already complete: " + ", ".join(str(p) for p in left))
                if main_process():
                    err.print(Text.assemble(("interrupted ", "red"), one_line(f"({note}; no partial file is left)")))
                raise typer.Exit(130)
            except (typer.Exit, typer.Abort):
                finished = True
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
                if finished and dist.current().enabled:
                    dist.current().settle()
                dist.shutdown()
                restore_deterministic(deterministic)

    if hasattr(fn, "_gif_outer"):  # generated options: this wrapper carries their signature too
        fn._gif_outer.append(wrapper)
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
              "compare": "compare", "lanczos": "lanczos", "train": "training", "unlearn": "unlearn",
              "precondition": "precondition"}

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


def version_callback(value: bool) -> None:
    if value:
        from .._version import __version__

        say(f"gif {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                          help="Print gif's version and exit.")] = False,
) -> None:
    """Make a trained PyTorch classifier forget data with Generalized Influence Functions (GIF)."""
