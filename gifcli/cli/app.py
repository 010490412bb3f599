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

        files.reset_written()
        # --deterministic switches torch's deterministic mode for this command only
        deterministic = torch_deterministic()
        try:
            # an output that cannot be written is known before anything is computed
            for name in OUTPUT_FILES:
                value = kwargs.get(name)
                if value is not None and str(value) != files.STDIO:
                    files.check_writable(value)
            for name in OUTPUT_FOLDERS:
                if kwargs.get(name) is not None:
                    files.check_folder_creatable(kwargs[name])
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


# ---------------------------------------------------------------------------------------------
# the unlearning options, generated from the common fields and every registered method's Args
ALL = "all"  # with_options(ALL): the common fields and every method's fields
SELECT_FIELDS = ("criterion", "ratio", "threshold", "output_score", "seed")
SOLVE_FIELDS = ("method", "solver", "tol", "max_iter", "damping", "preconditioner", "kfac_damping", "weight_decay",
                "recurrence", "hvp_mode", "memory_budget", "hessian_samples", "hessian_data", "target",
                "gradient_samples", "seed")


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One generated CLI option: the field it sets, for which methods, how its text is parsed."""

    dest: str  # the Python parameter name
    flag: str  # --name
    field: str  # the dataclass field
    methods: tuple[str, ...]  # () for a common field
    cli_type: Any
    parse: Callable[[Any], Any]
    help: str
    default: Any  # the CLI default: None means "the method's own default"


def _csv(kind: type) -> Callable[[str], Optional[tuple]]:
    def parse(text: str) -> Optional[tuple]:
        if text.strip() == "auto":
            return None
        try:
            return tuple(kind(t) for t in text.split(",") if t.strip())
        except ValueError:
            raise UsageError(f"expected a comma-separated list of numbers, got {text!r}") from None
    return parse


def _number_or_word(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _cli_form(name: str, hint: Any) -> tuple[Any, Callable[[Any], Any]]:
    """The CLI type of a field's type hint and how the option's value becomes the field's."""
    import typing

    if name == "memory_budget":
        return Optional[str], lambda v: _parse_size(v)
    if name == "scales":
        from ..core.steps import parse_scales

        return str, lambda v: (None if (sc := parse_scales(v)) is None else tuple(sc))
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is tuple or (args and typing.get_origin(args[0]) is tuple):
        inner = typing.get_args(hint if origin is tuple else args[0])
        return str, _csv(int if inner and inner[0] is int else float)
    if origin is typing.Union and len(args) > 1:  # e.g. 'auto' or a number
        return str, _number_or_word
    base = args[0] if args else hint
    if base in (int, float, str, bool):
        return Optional[base], lambda v: v
    return str, lambda v: v


def option_specs(fields: Any = ALL) -> list[OptionSpec]:
    """The generated options: every common field, then each registered method's Args fields (a
    class shared by several methods gives its options once). ``fields``: ALL, or a tuple of
    field names (then only those)."""
    import typing

    from ..core.args import COMMON, COMMON_HELP
    from ..core.methods import METHODS

    specs: list[OptionSpec] = []
    for name in COMMON:
        if fields is ALL or name in fields:
            cli_type = str if name == "method" else (int if name == "seed" else Optional[str])
            default = {"method": "gif", "seed": 0, "scale_criterion": None}[name]
            specs.append(OptionSpec(name, f"--{name.replace('_', '-')}", name, (), cli_type, lambda v: v,
                                    COMMON_HELP[name], default))
    owners: dict[type, list[str]] = {}
    for name, method in METHODS.items():
        owners.setdefault(method.Args, []).append(name)
    for cls, names in owners.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if fields is not ALL and f.name not in fields:
                continue
            cli_type, parse = _cli_form(f.name, hints[f.name])
            dest = cls.option(f.name)[2:].replace("-", "_")
            shown = ",".join(str(x) for x in f.default) if isinstance(f.default, tuple) else f.default
            text = f"{f.metadata['help']} [{'/'.join(names)}; default: {'auto' if shown is None else shown}]"
            specs.append(OptionSpec(dest, cls.option(f.name), f.name, tuple(names), cli_type, parse, text, None))
    return specs


def unlearn_args(values: dict[str, Any]):
    """UnlearnArgs from generated option values: None is 'not given' (the method's default); an
    option of another method than the chosen one is refused."""
    from ..core.args import UnlearnArgs

    specs = {s.dest: s for s in option_specs()}
    method = values.get("method") or "gif"
    common = {k: values[k] for k in ("seed", "scale_criterion") if values.get(k) is not None}
    own: dict[str, Any] = {}
    for dest, value in values.items():
        spec = specs.get(dest)
        if spec is None or not spec.methods or value is None:
            continue
        if method not in spec.methods:
            raise UsageError(f"{spec.flag} is an option of {', '.join(spec.methods)}, not of method {method!r}")
        own[spec.field] = spec.parse(value)
    return UnlearnArgs(method, **common, **own)


_GENERATED: list[tuple[Callable, Callable, Any, dict]] = []  # (wrapper, fn, fields, helps)


def _signature(fn: Callable, fields: Any, helps: dict) -> inspect.Signature:
    sig = inspect.signature(fn, eval_str=True)
    params = [p for p in sig.parameters.values() if p.name != "uargs"]
    for spec in option_specs(fields):
        if spec.dest in helps and helps[spec.dest] is None:  # skipped
            continue
        annotation = Annotated[spec.cli_type, typer.Option(spec.flag, help=helps.get(spec.dest, spec.help))]
        params.append(inspect.Parameter(spec.dest, inspect.Parameter.KEYWORD_ONLY, default=spec.default,
                                        annotation=annotation))
    return sig.replace(parameters=params)


def _refresh(*_: Any) -> None:
    """A method registered after the commands were defined: regenerate their options (on the
    wrapper and on every decorator around it that copied its signature)."""
    for wrapper, fn, fields, helps in _GENERATED:
        sig = _signature(fn, fields, helps)
        for f in [wrapper, *wrapper._gif_outer]:  # type: ignore[attr-defined]
            f.__signature__ = sig


def with_options(fields: Any = ALL, helps: Optional[dict] = None, skip: tuple[str, ...] = ()):
    """Add the generated unlearning options to a command; it receives their values as ``uargs``
    (a dict for :func:`unlearn_args`). ``fields``: ALL (every method's) or a tuple of field names;
    ``skip``: common fields the command replaces with its own (compare's --methods, --seeds)."""
    from ..core.methods import METHODS

    helps = {**(helps or {}), **{name: None for name in skip}}

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(**kwargs):
            dests = {s.dest for s in option_specs(fields)} - set(skip)
            kwargs["uargs"] = {n: kwargs.pop(n) for n in list(kwargs) if n in dests}
            return fn(**kwargs)

        wrapper.__signature__ = _signature(fn, fields, helps)  # type: ignore[attr-defined]
        wrapper._gif_outer = []  # type: ignore[attr-defined]  (decorators applied later: see handled)
        _GENERATED.append((wrapper, fn, fields, helps))
        return wrapper

    if not getattr(with_options, "_listening", False):
        METHODS.listen(_refresh)
        with_options._listening = True  # type: ignore[attr-defined]
    return deco


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
