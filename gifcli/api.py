"""gif from Python: the same core the commands use, on your model and your data, no files.

Data is a ``DataLoader`` (its dataset is read with its batch size), a map-style ``Dataset`` of
``(x, y)`` pairs, or a pair of tensors ``(x, y)``. The loss is cross-entropy unless you pass a
sum-reduced ``loss(outputs, targets)``. Every function leaves ``model`` untouched (not moved, not
switched to eval mode, not edited: it works on a copy) and returns values (dataclasses); nothing
prints. The keyword arguments of a method are its own arguments' fields (``gif.unlearn(...,
method="ssd", alphas=(1, 10))``; ``gif.method_arguments("ssd")`` lists them with their help).

    import gifcli as gif

    result = gif.unlearn(model, forget=forget_loader, train=retained_loader, scale=10.0)
    edited = result.model

    J = gif.select(model, forget_loader, ratio=0.1)
    delta = gif.influence(model, forget_loader, retained_loader, J=J)
    edited = gif.apply(model, delta, scale=10.0)
    print(gif.evaluate(edited, test_loader))
"""
from __future__ import annotations

import copy
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .core.args import DEFAULT_METHOD, Runtime, UnlearnArgs
from .core.edit import edited_copy
from .core.methods import METHODS
from .core.passes import Metrics
from .core.passes import evaluate as _evaluate
from .core.run import UnlearnResult, run
from .core.tasks import ClassRemoval, GivenForget, SplitData
from .data.datasets import BATCH, ImageTensors, Split
from .errors import UsageError
from .math.hvp import SumLoss, cross_entropy_sum
from .math.params import IndexSet
from .math.selection import Selection
from .methods.influence import chain_method
from .methods.influence.steps import InfluenceRun
from .methods.influence.steps import influence as _influence
from .methods.influence.steps import select as _select
from .models.specs import set_eval

DataLike = Union[DataLoader, Dataset, tuple, Split]


def as_split(data: DataLike) -> tuple[Split, Optional[int]]:
    """A Split over ``data`` and the batch size a DataLoader asked for (None otherwise)."""
    if isinstance(data, Split):
        return data, None
    if isinstance(data, DataLoader):
        if isinstance(data.dataset, torch.utils.data.IterableDataset):
            raise UsageError("an IterableDataset cannot be sampled: pass a map-style dataset")
        return Split.of(data.dataset), data.batch_size
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if len(x) != len(y):
            raise UsageError(f"x has {len(x)} rows and y {len(y)}")
        return Split.of(ImageTensors(x, y)), None
    if isinstance(data, Dataset):
        return Split.of(data), None
    raise UsageError(f"data must be a DataLoader, a Dataset or (x, y) tensors, not {type(data).__name__}")


def _runtime(device: Union[str, torch.device], batch_size: Optional[int], loss: Optional[SumLoss],
             *splits: Optional[int]) -> Runtime:
    size = batch_size or next((s for s in splits if s), None) or BATCH
    return Runtime(torch.device(device), int(size), 0, loss=loss or cross_entropy_sum)


def method_arguments(method: str = DEFAULT_METHOD) -> dict[str, tuple[Any, str]]:
    """A method's keyword arguments: ``{name: (default, help)}`` (from its own arguments dataclass)."""
    import dataclasses

    return {f.name: (f.default, f.metadata.get("help", "")) for f in dataclasses.fields(METHODS.get(method).Args)}


def _copy(model: nn.Module, device: Union[str, torch.device]) -> nn.Module:
    """The caller's model is never changed: every call works on a copy (on ``device``, in eval mode)."""
    return set_eval(copy.deepcopy(model).to(torch.device(device)))


def select(model: nn.Module, forget: DataLike, *, seed: int = 0, train_size: Optional[int] = None,
           loss: Optional[SumLoss] = None, device: str = "cpu", batch_size: Optional[int] = None,
           **options: Any) -> Selection:
    """The parameters J to edit, chosen on the forget samples (``Selection.J``). ``options``: gif's
    selection arguments (criterion, ratio, threshold, output_score; see ``method_arguments("gif")``)."""
    split, bs = as_split(forget)
    rt = _runtime(device, batch_size, loss, bs)
    args = UnlearnArgs(DEFAULT_METHOD, seed=seed, **options)
    task = GivenForget(split)
    return _select(_copy(model, rt.device), task.target(None), args, rt, train_size or len(split))


def influence(model: nn.Module, forget: DataLike, train: DataLike, *, J: Union[Selection, IndexSet, None] = None,
              method: str = DEFAULT_METHOD, loss: Optional[SumLoss] = None, device: str = "cpu",
              batch_size: Optional[int] = None, weight_decay: float = 0.0, **options: Any) -> InfluenceRun:
    """The influence vector over J (``InfluenceRun.delta``): least squares H_J delta = -g.

    ``train`` is the retained training data (the Hessian is of its mean loss, and g is scaled by
    1/len(train)). ``options`` are UnlearnArgs fields: solver, tol, max_iter, damping,
    preconditioner, kfac_damping, hessian_samples, seed, recurrence, hvp_mode, memory_budget.
    """
    f, fb = as_split(forget)
    t, tb = as_split(train)
    rt = _runtime(device, batch_size, loss, fb, tb)
    options.setdefault("target", "forget")  # one vector: the paper's (``target="remaining"``: minus G)
    args = UnlearnArgs(method=method, **options)
    chain_method(method)  # a method whose edit is an influence vector
    index_set = J.J if isinstance(J, Selection) else J
    task = GivenForget(f)
    return _influence(_copy(model, rt.device), index_set, task.target(None), t, args, rt, weight_decay,
                      training=task.training(SplitData(t)))


def apply(model: nn.Module, influence_run: InfluenceRun, scale: float) -> nn.Module:
    """A copy of ``model`` with theta_J <- theta_J - scale * delta (scale > 0 removes the forget set)."""
    return edited_copy(model, influence_run.J, influence_run.delta, scale)


def evaluate(model: nn.Module, data: DataLike, *, loss: Optional[SumLoss] = None, device: str = "cpu",
             batch_size: Optional[int] = None) -> Metrics:
    """Mean loss and accuracy of ``model`` on ``data``."""
    split, bs = as_split(data)
    return _evaluate(_copy(model, device), split, _runtime(device, batch_size, loss, bs))


def unlearn(model: nn.Module, forget: Optional[DataLike] = None, train: Optional[DataLike] = None, *,
            validation: Optional[DataLike] = None, test: Optional[DataLike] = None,
            forget_label: Optional[int] = None, scale: Union[str, float, Sequence[float]] = "auto",
            scale_criterion: Optional[str] = None, loss: Optional[SumLoss] = None, device: str = "cpu",
            batch_size: Optional[int] = None, num_classes: Optional[int] = None, **options: Any) -> UnlearnResult:
    """One call: the method's edit (for gif: select J, compute the influence, choose or take the
    scale, apply); returns the result.

    Either ``forget`` (the samples to forget; ``train`` is then the retained training data) or
    ``forget_label`` (a class; ``train`` is all training data). ``scale="auto"`` chooses the scale
    on ``validation`` by ``scale_criterion`` (privacy or repair for samples; for a class f1, or
    match where gif aims at the masked outputs, its default at a stationary point); a
    method without a scale chooses its own hyper-parameters there. ``options``: ``method``,
    ``seed`` and the method's own arguments (``method_arguments(method)``).
    """
    if train is None:
        raise UsageError("pass the training data: train=...")
    t, tb = as_split(train)
    v = as_split(validation)[0] if validation is not None else None
    te = as_split(test)[0] if test is not None else None
    method = options.pop("method", DEFAULT_METHOD)
    has_scale = "scales" in METHODS.get(method).Args.field_names()
    scales = None if scale == "auto" else tuple([float(scale)] if isinstance(scale, (int, float)) else scale)
    if v is None and (scales is None or not has_scale):
        raise UsageError("the edit is chosen on validation data: pass validation=..." +
                         (" or a scale" if has_scale else ""))
    if scales is not None and not has_scale:
        raise UsageError(f"method {method!r} has no scale")
    if has_scale:
        options["scales"] = scales
    args = UnlearnArgs(method, scale_criterion=scale_criterion, **options)
    if (forget is None) == (forget_label is None):
        raise UsageError("pass exactly one of forget=... and forget_label=...")
    if forget_label is not None:
        task = ClassRemoval(forget_label)
        classes = num_classes or int(t.labels.max()) + 1
        data = SplitData(t, v, te, classes)
        fb = None
    else:
        f, fb = as_split(forget)
        task = GivenForget(f, scale_criterion or "privacy")
        data = SplitData(t, v, te, num_classes or 0)
    rt = _runtime(device, batch_size, loss, fb, tb)
    return run(task, model, data, args, rt, report=te is not None)


__all__ = ["apply", "as_split", "evaluate", "influence", "method_arguments", "select", "unlearn"]
