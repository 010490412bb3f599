"""The unlearning options of the commands, generated from the common fields and every registered
method's arguments dataclass (one place for their names, types, choices, parsing and help)."""
import dataclasses
import functools
import inspect
from typing import Annotated, Any, Callable, Optional

import typer

from ..errors import UsageError
from ..parsing import comma_list

# ---------------------------------------------------------------------------------------------
# option injection: the unlearning options come from UnlearnArgs' fields (one place for their help)
# ---------------------------------------------------------------------------------------------
# the unlearning options, generated from the common fields and every registered method's Args
ALL = "all"  # with_options(ALL): the common fields and every method's fields


def step_fields(group: str, *common: str) -> Callable[[], tuple[str, ...]]:
    """The options of one step of the default method (``arg(group=...)``) and the given common
    fields, looked up when the options are generated (so a field added to the method's Args appears)."""
    def fields() -> tuple[str, ...]:
        from ..core.args import DEFAULT_METHOD
        from ..core.methods import METHODS

        return (*common, *METHODS.get(DEFAULT_METHOD).Args.fields_in(group))
    return fields


SELECT_FIELDS = step_fields("select", "seed")  # gif select
SOLVE_FIELDS = step_fields("solve", "method", "seed")  # gif influence


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


def _number_or_word(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _cli_form(name: str, hint: Any, parse: Optional[Callable[[str], Any]] = None) -> tuple[Any, Callable[[Any], Any]]:
    """The CLI type of a field's type hint and how the option's value becomes the field's."""
    import typing

    if parse is not None:  # the field says how its text becomes a value
        return Optional[str], lambda v: None if v is None else (None if (x := parse(v)) is None else
                                                                 tuple(x) if isinstance(x, list) else x)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is tuple or (args and typing.get_origin(args[0]) is tuple):
        inner = typing.get_args(hint if origin is tuple else args[0])
        cast = int if inner and inner[0] is int else float
        flag = name.replace("_", "-")
        return str, lambda v: None if (x := comma_list(v, cast, flag, auto=True)) is None else tuple(x)
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

    from ..core.args import COMMON, COMMON_HELP, DEFAULT_METHOD
    from ..core.methods import METHODS

    if callable(fields):
        fields = fields()
    specs: list[OptionSpec] = []
    for name in COMMON:
        if fields is ALL or name in fields:
            cli_type = str if name == "method" else (int if name == "seed" else Optional[str])
            default = {"method": DEFAULT_METHOD, "seed": 0, "scale_criterion": None}[name]
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
            cli_type, parse = _cli_form(f.name, hints[f.name], f.metadata.get("parse"))
            dest = cls.option(f.name)[2:].replace("-", "_")
            shown = ",".join(str(x) for x in f.default) if isinstance(f.default, tuple) else f.default
            text = f"{f.metadata['help']} [{'/'.join(names)}; default: {'auto' if shown is None else shown}]"
            same = next((i for i, sp in enumerate(specs) if sp.dest == dest), None)
            if same is not None:  # a field of the same name in two Args classes (e.g. while methods re-register)
                specs[same] = dataclasses.replace(specs[same], methods=specs[same].methods + tuple(names))
                continue
            specs.append(OptionSpec(dest, cls.option(f.name), f.name, tuple(names), cli_type, parse, text, None))
    return specs


def unlearn_args(values: dict[str, Any]):
    """UnlearnArgs from generated option values: None is 'not given' (the method's default); an
    option of another method than the chosen one is refused."""
    from ..core.args import DEFAULT_METHOD, UnlearnArgs

    specs = {s.dest: s for s in option_specs()}
    method = values.get("method") or DEFAULT_METHOD
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


class Generated:
    """The commands whose options are generated, and whether they follow the method registry (so a
    method registered later, e.g. by a plug-in, regenerates them): one per command-line app."""

    def __init__(self) -> None:
        self.commands: list[tuple[Callable, Callable, Any, dict]] = []  # (wrapper, fn, fields, helps)
        self.listening = False

    def __iter__(self):
        return iter(self.commands)


_GENERATED = Generated()


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
        _GENERATED.commands.append((wrapper, fn, fields, helps))
        return wrapper

    if not _GENERATED.listening:
        METHODS.listen(_refresh)
        _GENERATED.listening = True
    return deco
