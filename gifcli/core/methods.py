"""The method seam: what an unlearning method is, and the one registry that knows their names.

A method is one registered object (one file under ``gifcli/methods/``, or a user's own file):

* ``Args``: its own frozen dataclass of arguments (a subclass of :class:`MethodArgs`), every field
  with a ``help`` and a default. The CLI options, the YAML keys of ``gif compare`` and the Python
  API's keyword arguments are generated from these fields; nothing restates them by hand.
* ``unlearn(model, task, data, args, rt, ctx) -> MethodOutcome``: the edit, with the
  hyper-parameters it chose on the validation split and every setting it tried.
* ``files(outcome, ...)``: the artifacts it writes beside the edited checkpoint (each saves itself),
  and ``verify(...)``: what ``gif verify`` can check or re-derive of an edit it made.

Methods register with ``METHODS.register(name, method)``. The built-in ones live in the
``gifcli.methods`` package, which the registry loads the first time a name is looked up: nothing
else has to import them for their names to be known.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from torch import nn

from ..errors import UsageError
from ..registry import Registry

if TYPE_CHECKING:  # type hints only: the method seam imports nothing of the machinery it serves
    from ..data.datasets import Data
    from .args import Runtime, UnlearnArgs
    from .tasks import Task


def arg(help: str, default: Any = None, flag: Optional[str] = None, *, choices: Any = None,
        parse: Optional[Callable[[str], Any]] = None, group: Optional[str] = None, **kw: Any) -> Any:
    """A method argument, declared once for the CLI, ``gif compare``'s YAML, the API and the docs:

    * ``help``: shown by --help, docs and errors; ``default``; ``flag``: the CLI option's name when
      it is not the field's own (``scales`` is ``--scale``);
    * ``choices``: the values it may take (a tuple, or a function returning them, e.g. a
      registry's names); checked on construction, whatever the caller;
    * ``parse``: how a command line's (or a YAML file's) text becomes the value (``'2GiB'`` -> a
      number of bytes), when its type alone does not say;
    * ``group``: the step of the method it belongs to; a command that runs one step takes that
      group's options (``gif select``: ``select``; ``gif influence``: ``solve``).
    """
    metadata = {"help": help, **({"flag": flag} if flag else {}), **({"choices": choices} if choices else {}),
                **({"parse": parse} if parse else {}), **({"group": group} if group else {})}
    if "default_factory" in kw:
        return field(metadata=metadata, **kw)
    return field(default=default, metadata=metadata)


def choices_of(f: dataclasses.Field) -> Optional[tuple]:
    """A field's allowed values (None: any)."""
    c = f.metadata.get("choices")
    return tuple(c() if callable(c) else c) if c is not None else None


@dataclass(frozen=True)
class MethodArgs:
    """A method's own arguments (subclass it with frozen dataclass fields made by :func:`arg`).

    ``cli_prefix`` names the CLI options (``--{prefix}-{field}``; no prefix: ``--{field}``), so two
    methods may use the same field name; every field's ``choices`` are checked, then ``validate``
    refuses other bad values with a UsageError.
    """

    cli_prefix: ClassVar[str] = ""

    def validate(self) -> None:
        """Refuse a bad value with one line (a UsageError); called on construction."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):  # YAML and JSON give lists; a frozen record keeps tuples
                object.__setattr__(self, f.name, tuple(v))
            allowed = choices_of(f)
            if allowed is not None and v not in allowed and not (v is None and f.default is None):
                raise UsageError(f"{self.option(f.name)} must be one of {', '.join(map(str, allowed))}, got {v!r}")
        self.validate()

    def as_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def fields_in(cls, group: str) -> tuple[str, ...]:
        """The fields of one step (``arg(group=...)``), in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("group") == group)

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name)

    @classmethod
    def option(cls, name: str) -> str:
        """The CLI option of field ``name``."""
        meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
        flag = meta.get("flag", name).replace("_", "-")
        return f"--{cls.cli_prefix}-{flag}" if cls.cli_prefix else f"--{flag}"


@dataclass
class ModelContext:
    """What a method may need to know about how the model was made."""

    weight_decay: Optional[float] = None  # the training objective's L2 weight (H + wd I)
    train_config: Optional[dict] = None  # the recipe the model was trained with (retrain, finetune)
    build: Optional[Callable[[], nn.Module]] = None  # a freshly initialised model of the same architecture


@dataclass
class MethodOutcome:
    """An edit and how it was chosen. ``artifacts`` are the method's own results (an index set, an
    influence run, ...) that its ``files`` write; nothing outside the method reads inside them."""

    edited: nn.Module
    hyper: dict  # what was chosen, e.g. {"scale": 14.7}
    search: list[dict] = field(default_factory=list)  # every setting tried, with its validation score
    artifacts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    summary: dict = field(default_factory=dict)  # phases, the decision line, warnings (Method.report reads it)


@dataclass
class MethodReport:
    """What a method says about its edit, for every caller alike (the CLI prints it, report.json,
    ``gif compare`` and the API record it); nothing outside the method reads its artifacts.

    ``record``: keys merged into report.json (a method with an influence vector: ``influence``);
    ``lines``: what is printed below the table; ``warnings``; ``describe``: words for the run's
    title (e.g. J's criterion and share); ``selected``: how many parameters the edit may move, for a
    method that edits a chosen subset; ``decision``: what the method decided from the model (one line);
    ``criterion``: the scale criterion it chose by, when that is not the task's default."""

    record: dict = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    describe: list[str] = field(default_factory=list)
    selected: Optional[int] = None
    decision: Optional[str] = None
    criterion: Optional[str] = None  # the scale criterion the method used, where it is not the task's default


@dataclass
class Verified:
    """What ``gif verify`` established about one edit (``checked``) and could not (``unchecked``);
    ``edited`` names the checkpoint when the whole chain was verified."""

    edited: str = ""
    checked: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unchecked


class Method(ABC):
    """An unlearning method (see the module docstring)."""

    name: str = ""
    Args: ClassVar[type[MethodArgs]] = MethodArgs
    # its edit is a model retrained without the forget set: gif compare measures the other cells against it
    reference: ClassVar[bool] = False
    compared: bool = False  # one of the methods gif compare runs when none are named

    @abstractmethod
    def unlearn(self, model: nn.Module, task: "Task", data: "Data", args: "UnlearnArgs", rt: "Runtime",
                ctx: ModelContext) -> MethodOutcome: ...

    def check(self, args: "UnlearnArgs", ctx: ModelContext) -> None:
        """Refuse, before any work, what cannot run on this model (a UsageError)."""

    def report(self, outcome: MethodOutcome) -> MethodReport:
        """What to print and record of an edit beside the metrics (the default: its warnings and the
        decision line its summary holds)."""
        return MethodReport(warnings=list(outcome.summary.get("warnings", [])),
                            decision=outcome.summary.get("decision"), criterion=outcome.summary.get("criterion"))

    def grid(self, args: "UnlearnArgs", criteria: tuple, ratios: tuple) -> list["UnlearnArgs"]:
        """``gif compare``'s cells of this method: one per criterion x ratio of J for a method whose
        arguments have both, else its arguments as given."""
        if args.has("criterion") and args.has("ratio"):
            return [args.replace(criterion=c, ratio=r) for c in criteria for r in ratios]
        return [args]

    def files(self, outcome: MethodOutcome, folder: Path, loaded: Any, task: "Task", args: "UnlearnArgs"
              ) -> tuple[dict[str, Path], dict]:
        """Write the method's own artifacts into ``folder``: ``({name: path}, what the edited
        checkpoint records of them)``. Methods without artifacts write nothing."""
        return {}, {}

    def verify(self, base: Any, edited: Any, edit: dict, folder: Path, given: dict[str, Optional[Path]]
               ) -> Verified:
        """What can be checked of an edit this method made. The default: nothing beyond the
        hashes ``gif verify`` checks itself; the weights are re-derived only by running it again."""
        return Verified(unchecked=[f"re-deriving the edited weights: method {self.name!r} stores no edit vector, "
                                   "so its edit is re-derived only by running it again"])


def _load_builtins() -> None:
    import importlib

    importlib.import_module("gifcli.methods")  # its modules register the built-in methods


METHODS: Registry[Method] = Registry("method", load=_load_builtins)


def method_args(method: str, values: Optional[dict] = None) -> MethodArgs:
    """The method's own arguments from a mapping of its field names (unknown names refused)."""
    cls = METHODS.get(method).Args
    values = dict(values or {})
    unknown = set(values) - set(cls.field_names())
    if unknown:
        raise UsageError(f"method {method!r} has no argument {', '.join(sorted(unknown))} "
                         f"(its arguments: {', '.join(cls.field_names()) or 'none'})")
    try:
        return cls(**values)
    except TypeError as exc:
        raise UsageError(f"bad arguments for method {method!r}: {exc}") from None
