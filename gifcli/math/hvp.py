"""Exact Hessian-vector products of a mean loss over a fixed Hessian sample.

The Hessian sample is a list of batches; its loss is the mean over all of their samples,
``L(theta) = (1/N) sum_i l(z_i, theta)``, so a sample larger than memory can be streamed one
batch at a time and summed. Products are Pearlmutter's (double backward), never finite
differences and never Gauss-Newton.

Modes (pick by measurement, see benchmarks/hvp_ratio.py):

* ``retain``: the first-order gradient graph of every batch is built once and kept; each
  product is one extra backward pass through it. Fastest when the graphs fit in memory.
* ``recompute``: forward + gradient-with-graph + backward for every product and batch, as the
  paper's reference code does. Constant memory in the number of products.
* ``forward``: torch.func forward-over-reverse, ``jvp(grad(L))``, recomputed per product.

With ``fast_conv`` (default) the ``retain``/``recompute`` graphs route ``conv2d`` through
fastconv.py: the same exact products with cheaper second-order kernels, and ``hvp(v, only=J)``
skips weight rows outside J where the caller only reads J (GIF's ``H_J^T u = (H u)_J``).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad as func_grad, jvp

from .fastconv import fast_conv_double_backward, only_rows
from .params import IndexSet, ParamSpace

Batch = tuple[torch.Tensor, torch.Tensor]
SumLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> summed loss


def cross_entropy_sum(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(outputs, targets, reduction="sum")


def mse_sum(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((outputs.reshape(targets.shape) - targets) ** 2).sum()


HVP_MODES = ("retain", "recompute", "forward")


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
    ) -> None:
        if mode not in HVP_MODES:
            raise ValueError(f"unknown HVP mode {mode!r}; choose from {HVP_MODES}")
        if not batches:
            raise ValueError("the Hessian sample is empty")
        self.model = model
        self.loss = loss
        self.mode = mode
        self.fast_conv = fast_conv
        named = [(n, p) for n, p in model.named_parameters()]
        self.names = [n for n, _ in named]
        self.params = [p.detach().requires_grad_(True) for _, p in named]
        self.space = ParamSpace.of(named)
        self.batches = list(batches)
        self.n_samples = int(sum(len(y) for _, y in self.batches))
        self.products = 0  # number of Hessian-vector products computed
        self._graphs: list[tuple[torch.Tensor, ...]] | None = None
        self._rows_cache: tuple[IndexSet, dict[int, torch.Tensor]] | None = None  # (J, its rows)

    # -- first order -------------------------------------------------------------------------
    def _batch_loss(self, params: Sequence[torch.Tensor], batch: Batch) -> torch.Tensor:
        x, y = batch
        out = functional_call(self.model, dict(zip(self.names, params)), (x,))
        # Dividing each batch's summed loss by the total count makes the sum over batches the mean.
        return self.loss(out, y) / self.n_samples

    def gradient(self) -> torch.Tensor:
        """grad L(theta), flat."""
        total = None
        for b in self.batches:
            g = torch.autograd.grad(self._batch_loss(self.params, b), self.params)
            flat = self.space.flatten(g)
            total = flat if total is None else total + flat
        return total.detach()

    # -- second order ------------------------------------------------------------------------
    def _graph(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """The first-order gradient of one batch, with its graph (for a product through it)."""
        with fast_conv_double_backward() if self.fast_conv else contextlib.nullcontext():
            return torch.autograd.grad(self._batch_loss(self.params, batch), self.params, create_graph=True)

    def _ensure_graphs(self) -> list[tuple[torch.Tensor, ...]]:
        if self._graphs is None:
            self._graphs = [self._graph(b) for b in self.batches]
        return self._graphs

    def release(self) -> None:
        """Drop the kept first-order graphs (frees their memory)."""
        self._graphs = None

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
        """H v for a flat vector v (same dtype/device as the parameters).

        With ``only``, the product is exact on the indices of ``only`` and undefined elsewhere
        (convolution weight rows outside it are skipped, see fastconv.py); use it when the
        caller gathers ``only`` from the result, as GIF's ``H_J^T u = (H u)_J`` does.
        """
        parts = self.space.unflatten(vector.detach())
        self.products += 1
        if self.mode == "forward":
            return self._hvp_forward(parts)
        total = None
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
            flat = self.space.flatten([torch.zeros_like(p) if h is None else h for h, p in zip(hv, self.params)])
            total = flat if total is None else total + flat
        return total

    def _hvp_forward(self, parts: list[torch.Tensor]) -> torch.Tensor:
        primals = tuple(p.detach() for p in self.params)
        total = None
        for b in self.batches:
            grad_fn = func_grad(lambda *ps: self._batch_loss(ps, b), argnums=tuple(range(len(primals))))
            _, tangent_out = jvp(grad_fn, primals, tuple(parts))
            flat = self.space.flatten(tangent_out)
            total = flat if total is None else total + flat
        return total


def mean_loss_gradient(
    model: nn.Module, batches: Sequence[Batch], loss: SumLoss = cross_entropy_sum
) -> torch.Tensor:
    """grad of the mean loss of ``model`` over ``batches``, flat (same order as named_parameters)."""
    return HessianSample(model, batches, loss).gradient()
