"""Exact Hessian-vector products of a mean loss over a fixed Hessian sample.

The Hessian sample is a list of batches; its loss is the mean over all of their samples,
``L(theta) = (1/N) sum_i l(z_i, theta)``, so a sample larger than memory can be streamed one
batch at a time and summed. Batches stay where they are (CPU) and move to the parameters'
device as they are used. Products are Pearlmutter's (double backward), never finite
differences and never Gauss-Newton.

Distributed: with ``reduce`` (a sum over processes) each process holds its shard of the
sample, ``N`` is the total over all shards, and every gradient and product is summed, so every
process gets the same full product (see gifcli/dist.py).

Modes (pick by measurement, see benchmarks/hvp_ratio.py):

* ``retain``: the first-order gradient graph of every batch is built once and kept; each
  product is one extra backward pass through it. Fastest when the graphs fit in memory.
* ``recompute``: forward + gradient-with-graph + backward for every product and batch, as the
  paper's reference code does. Constant memory in the number of products.
* ``forward``: torch.func forward-over-reverse, ``jvp(grad(L))``, recomputed per product.

With ``fast_conv`` (default) the ``retain``/``recompute`` graphs route ``conv2d`` through
fastconv.py: the same exact products with cheaper second-order kernels, and ``hvp(v, only=J)``
skips weight rows outside J where the caller only reads J (GIF's ``H_J^T u = (H u)_J``).

``weight_decay`` adds the training objective's ``(wd/2)||theta||^2`` to the loss, i.e. ``wd * v``
to every product: the Hessian at the model's optimum is ``H + wd I``.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad as func_grad, jvp
from torch.overrides import TorchFunctionMode

from .fastconv import fast_conv_double_backward, only_rows
from .params import IndexSet, ParamSpace

Batch = tuple[torch.Tensor, torch.Tensor]
SumLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> summed loss
Reduce = Callable[[torch.Tensor], torch.Tensor]  # in-place sum over processes


def cross_entropy_sum(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(outputs, targets, reduction="sum")


def mse_sum(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((outputs.reshape(targets.shape) - targets) ** 2).sum()


HVP_MODES = ("retain", "recompute", "forward")


class _TwiceDifferentiable(TorchFunctionMode):
    """Swap the few ops whose backward PyTorch cannot differentiate for equal compositions.

    ``hardsigmoid``/``hardswish`` (MobileNetV3) become their clamp formulas (same values, and the
    true second derivative of hardswish, 1/3 between -3 and 3); attention uses the math kernel
    (the fused CPU/GPU kernels have no double backward).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.hardsigmoid:
            return torch.clamp(args[0] / 6 + 0.5, 0.0, 1.0)
        if func is F.hardswish:
            return args[0] * torch.clamp(args[0] / 6 + 0.5, 0.0, 1.0)
        return func(*args, **kwargs)


@contextlib.contextmanager
def twice_differentiable() -> Iterator[None]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with _TwiceDifferentiable(), sdpa_kernel([SDPBackend.MATH]):
        yield


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


class HessianSample:
    """The mean loss of ``model`` over ``batches`` as a function of its parameters.

    ``model`` is used functionally (``torch.func.functional_call``): its own parameters are
    neither modified nor given gradients. Put it in eval mode first (BatchNorm statistics are
    then fixed and the loss is a function of the parameters alone).
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[Batch],
        loss: SumLoss = cross_entropy_sum,
        mode: str = "retain",
        fast_conv: bool = True,
        total: Optional[int] = None,
        reduce: Optional[Reduce] = None,
        weight_decay: float = 0.0,
    ) -> None:
        if mode not in HVP_MODES:
            raise ValueError(f"unknown HVP mode {mode!r}; choose from {HVP_MODES}")
        self.model = model
        self.loss = loss
        self.mode = mode
        self.fast_conv = fast_conv
        self.reduce = reduce or _identity
        self.weight_decay = float(weight_decay)
        named = [(n, p) for n, p in model.named_parameters()]
        self.names = [n for n, _ in named]
        self.params = [p.detach().requires_grad_(True) for _, p in named]
        self.device = self.params[0].device
        self.space = ParamSpace.of(named)
        self.batches = list(batches)
        local = int(sum(len(y) for _, y in self.batches))
        self.n_samples = int(total) if total is not None else local
        if self.n_samples <= 0:
            raise ValueError("the Hessian sample is empty")
        self.products = 0  # number of Hessian-vector products computed
        self._graphs: list[tuple[torch.Tensor, ...]] | None = None
        self._rows_cache: tuple[IndexSet, dict[int, torch.Tensor]] | None = None  # (J, its rows)

    # -- first order -------------------------------------------------------------------------
    def _on_device(self, batch: Batch) -> Batch:
        x, y = batch
        dtype = self.params[0].dtype if x.is_floating_point() else None
        return x.to(self.device, dtype, non_blocking=True), y.to(self.device, non_blocking=True)

    def _batch_loss(self, params: Sequence[torch.Tensor], batch: Batch) -> torch.Tensor:
        x, y = self._on_device(batch)
        out = functional_call(self.model, dict(zip(self.names, params)), (x,))
        # Dividing each batch's summed loss by the total count makes the sum over batches the mean.
        return self.loss(out, y) / self.n_samples

    def gradient(self) -> torch.Tensor:
        """grad L(theta), flat (summed over processes)."""
        total = torch.zeros(self.space.size, dtype=self.params[0].dtype, device=self.device)
        for b in self.batches:
            g = torch.autograd.grad(self._batch_loss(self.params, b), self.params, allow_unused=True)
            total += self.space.flatten([torch.zeros_like(p) if t is None else t for t, p in zip(g, self.params)])
        return self.reduce(total).detach()

    # -- second order ------------------------------------------------------------------------
    def _graph(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """The first-order gradient of one batch, with its graph (for a product through it)."""
        with fast_conv_double_backward() if self.fast_conv else contextlib.nullcontext(), twice_differentiable():
            g = torch.autograd.grad(self._batch_loss(self.params, batch), self.params, create_graph=True,
                                    allow_unused=True)
        return tuple(torch.zeros_like(p) if t is None else t for t, p in zip(g, self.params))

    def _ensure_graphs(self) -> list[tuple[torch.Tensor, ...]]:
        if self._graphs is None:
            self._graphs = [self._graph(b) for b in self.batches]
        return self._graphs

    def release(self) -> None:
        """Drop the kept first-order graphs (frees their memory)."""
        self._graphs = None

    def graph_bytes(self) -> int:
        """Bytes the first batch's first-order graph keeps alive (distinct tensors saved for backward)."""
        if not self.batches:
            return 0
        seen: dict[int, int] = {}
        own = {p.untyped_storage().data_ptr() for p in self.params}

        def pack(t: torch.Tensor):
            try:
                storage = t.untyped_storage()
                if storage.data_ptr() not in own:
                    seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
            except (RuntimeError, NotImplementedError, AttributeError):
                pass
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            g = self._graph(self.batches[0])
        out = sum(seen.values()) + sum(t.numel() * t.element_size() for t in g)
        del g
        return int(out)

    def _rows_of(self, only: IndexSet) -> dict[int, torch.Tensor]:
        """Per weight tensor (by storage), the output rows that hold an index of ``only``."""
        if self._rows_cache is None or self._rows_cache[0] is not only:
            rows = {}
            for p, mask in zip(self.params, only.masks().values()):
                if p.dim() >= 2:
                    rows[p.data_ptr()] = torch.nonzero(mask.reshape(mask.shape[0], -1).any(1)).reshape(-1).to(p.device)
            self._rows_cache = (only, rows)
        return self._rows_cache[1]

    def hvp(self, vector: torch.Tensor, only: IndexSet | None = None) -> torch.Tensor:
        """(H + weight_decay I) v for a flat vector v (same dtype/device as the parameters).

        With ``only``, the product is exact on the indices of ``only`` and undefined elsewhere
        (convolution weight rows outside it are skipped, see fastconv.py); use it when the
        caller gathers ``only`` from the result, as GIF's ``H_J^T u = (H u)_J`` does.
        """
        parts = self.space.unflatten(vector.detach())
        self.products += 1
        if self.mode == "forward":
            total = self._hvp_forward(parts)
        else:
            total = torch.zeros(self.space.size, dtype=vector.dtype, device=vector.device)
            graphs: Iterable[tuple[torch.Tensor, ...]]
            if self.mode == "retain":
                graphs = self._ensure_graphs()
            else:
                graphs = (self._graph(b) for b in self.batches)
            keep = self.mode == "retain"
            rows = self._rows_of(only) if (only is not None and self.fast_conv) else None
            for g in graphs:
                with only_rows(rows) if rows is not None else contextlib.nullcontext():
                    hv = torch.autograd.grad(g, self.params, grad_outputs=parts, retain_graph=keep, allow_unused=True)
                total += self.space.flatten([torch.zeros_like(p) if h is None else h for h, p in zip(hv, self.params)])
        total = self.reduce(total)
        if self.weight_decay:
            total = total + self.weight_decay * vector.detach()
        return total

    def _hvp_forward(self, parts: list[torch.Tensor]) -> torch.Tensor:
        primals = tuple(p.detach() for p in self.params)
        total = torch.zeros(self.space.size, dtype=primals[0].dtype, device=primals[0].device)
        for b in self.batches:
            grad_fn = func_grad(lambda *ps: self._batch_loss(ps, b), argnums=tuple(range(len(primals))))
            with twice_differentiable():
                _, tangent_out = jvp(grad_fn, primals, tuple(parts))
            total += self.space.flatten(tangent_out)
        return total


def loss_gradient_sum(model: nn.Module, batches: Iterable[Batch], loss: SumLoss = cross_entropy_sum,
                      reduce: Optional[Reduce] = None) -> tuple[torch.Tensor, int]:
    """(grad of the summed loss over ``batches``, flat; the number of samples), summed over processes.

    ``batches`` may be a one-pass iterator (a DataLoader walk): each batch is used once.
    """
    named = list(model.named_parameters())
    names = [n for n, _ in named]
    params = [p.detach().requires_grad_(True) for _, p in named]
    space = ParamSpace.of(named)
    device = params[0].device
    total = torch.zeros(space.size, dtype=params[0].dtype, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in batches:
        x, y = x.to(device, params[0].dtype if x.is_floating_point() else None), y.to(device)
        out = functional_call(model, dict(zip(names, params)), (x,))
        g = torch.autograd.grad(loss(out, y), params, allow_unused=True)
        total += space.flatten([torch.zeros_like(p) if t is None else t for t, p in zip(g, params)])
        count += len(y)
    if reduce is not None:
        reduce(total)
        reduce(count)
    return total.detach(), int(count)


def mean_loss_gradient(
    model: nn.Module, batches: Sequence[Batch], loss: SumLoss = cross_entropy_sum
) -> torch.Tensor:
    """grad of the mean loss of ``model`` over ``batches``, flat (same order as named_parameters)."""
    total, n = loss_gradient_sum(model, batches, loss)
    return total / max(n, 1)
