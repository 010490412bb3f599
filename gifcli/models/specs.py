"""Architecture specs: how a checkpoint names the code that rebuilds its model.

``--arch`` takes

* a built-in name (``cnn``, ``mlp``, ``logreg``, ``resnet18``, ``vgg11``, or one a plug-in
  registered in :data:`gifcli.models.zoo.ARCHITECTURES`), called with the data's input shape,
  its class count and ``--arch-kwargs``;
* ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None, num_classes=K,
  **kwargs)``; weights always come from the user's file, never downloaded;
* ``package.module:callable`` or ``path/to/file.py:callable``: the user's own code, called
  with ``--arch-kwargs`` only, which must return an ``nn.Module``. **Loading a checkpoint that
  names such code imports and runs that code**, exactly as naming it on the command line does;
  gif never imports anything the user did not name;
* ``export:FILE.pt2``: a ``torch.export`` archive (no user code needed), whose graph is
  rebuilt by ``torch.export.load(FILE).module()``; its weights are replaced by the checkpoint's.

The spec, the keyword arguments and, for files, their absolute path and sha256 are recorded.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from torch import nn

from ..errors import GifError, InputFileError, UsageError, UserCodeError
from .zoo import ARCHITECTURES

KINDS = ("builtin", "torchvision", "python", "export")


def parse_kwargs(text: Optional[str]) -> dict[str, Any]:
    """``--arch-kwargs`` JSON -> dict (a usage error for anything but a JSON object)."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--arch-kwargs is not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise UsageError("--arch-kwargs must be a JSON object, e.g. '{\"hidden\": 64}'")
    return value


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: its spec string, keyword arguments, and the code file it names (if any)."""

    name: str
    kwargs: dict = field(default_factory=dict)
    code_path: Optional[str] = None  # python files and export archives: absolute path
    code_sha256: Optional[str] = None

    @property
    def kind(self) -> str:
        return kind_of(self.name)

    @staticmethod
    def parse(name: str, kwargs: Optional[dict] = None, base: Optional[Path] = None) -> "ArchSpec":
        """Check the spec's form (nothing is imported yet); a file is resolved against ``base``."""
        name = name.strip()
        kind = kind_of(name)
        if kind == "builtin" and name not in ARCHITECTURES:
            raise UsageError(f"unknown architecture {name!r}; use one of {', '.join(ARCHITECTURES.names())}, "
                             "torchvision:NAME, package.module:callable, file.py:callable or export:FILE.pt2")
        path = sha = None
        if kind in ("python", "export"):
            target = _file_part(name)
            if target is not None:
                p = Path(target).expanduser()
                if not p.is_absolute() and base is not None and not p.exists():
                    p = base / p
                if not p.is_file():
                    raise UserCodeError(f"architecture file {target} not found")
                from ..io.files import sha256_file

                path, sha = str(p.resolve()), sha256_file(p)
        return ArchSpec(name, dict(kwargs or {}), path, sha)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"arch": self.name, "arch_kwargs": self.kwargs}
        if self.code_path:
            out["arch_code"] = {"path": self.code_path, "sha256": self.code_sha256}
        return out

    def build(self, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        kind = self.kind
        if kind == "builtin":
            return _call(ARCHITECTURES.get(self.name), self.name, tuple(input_shape), int(num_classes), **self.kwargs)
        if kind == "torchvision":
            return _torchvision(self.name.split(":", 1)[1], num_classes, self.kwargs)
        if kind == "export":
            return _exported(self.code_path or _file_part(self.name) or "")
        return _call(_user_callable(self.name, self.code_path), self.name, **self.kwargs)


def kind_of(name: str) -> str:
    if name.startswith("torchvision:"):
        return "torchvision"
    if name.startswith("export:") or name.endswith(".pt2"):
        return "export"
    if ":" in name:
        return "python"
    return "builtin"


def _file_part(name: str) -> Optional[str]:
    if name.startswith("export:"):
        return name[len("export:"):]
    if name.endswith(".pt2"):
        return name
    module, _, _ = name.rpartition(":")
    return module if module.endswith(".py") else None


def _call(fn, spec: str, *args, **kwargs) -> nn.Module:
    try:
        model = fn(*args, **kwargs)
    except TypeError as exc:
        raise UserCodeError(f"architecture {spec} cannot be built with arguments {sorted(kwargs)}: {exc}") from None
    except Exception as exc:
        raise UserCodeError(f"architecture {spec} raised {type(exc).__name__} while building: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(model, nn.Module):
        raise UserCodeError(f"architecture {spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _torchvision(name: str, num_classes: int, kwargs: dict) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise UsageError(f"torchvision has no classification model {name!r} (e.g. resnet18, mobilenet_v3_small, "
                         "efficientnet_b0, convnext_tiny)")
    if "weights" in kwargs or "weights_backbone" in kwargs:
        raise UsageError("--arch-kwargs cannot name weights: gif never downloads them; pass your file with --weights")
    return _call(torchvision.models.get_model, f"torchvision:{name}", name, weights=None, num_classes=num_classes,
                 **kwargs)


@contextlib.contextmanager
def _on_path(folder: str) -> Iterator[None]:
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


def _user_callable(spec: str, code_path: Optional[str]):
    module_part, _, attr = spec.rpartition(":")
    if not attr or not module_part:
        raise UsageError(f"architecture {spec!r} must be package.module:callable or file.py:callable")
    try:
        if module_part.endswith(".py"):
            path = Path(code_path or module_part)
            if not path.is_file():
                raise UserCodeError(f"architecture file {path} not found")
            mod_name = f"gif_user_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
            module = sys.modules.get(mod_name)
            if module is None:
                loader_spec = importlib.util.spec_from_file_location(mod_name, path)
                if loader_spec is None or loader_spec.loader is None:
                    raise UserCodeError(f"cannot import {path}")
                module = importlib.util.module_from_spec(loader_spec)
                with _on_path(str(path.resolve().parent)):
                    loader_spec.loader.exec_module(module)
                sys.modules[mod_name] = module
        else:
            with _on_path(str(Path.cwd())):  # as `python -m` would: the current folder first
                module = importlib.import_module(module_part)
    except GifError:
        raise
    except ModuleNotFoundError as exc:
        raise UserCodeError(f"architecture module {module_part!r} not found ({exc.msg})") from None
    except Exception as exc:
        raise UserCodeError(f"importing {module_part} raised {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise UserCodeError(f"{module_part} has no callable {attr!r}")
    return fn


def _exported(path: str) -> nn.Module:
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"torch.export archive {p} not found")
    try:
        return torch.export.load(str(p)).module()
    except Exception as exc:
        raise InputFileError(f"{p} is not a loadable torch.export archive ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:100] if str(exc) else ''})") from None


def set_eval(model: nn.Module) -> nn.Module:
    """``model.eval()``; a torch.export graph keeps the mode it was exported in (it cannot switch)."""
    try:
        model.eval()
    except NotImplementedError:
        pass
    return model
