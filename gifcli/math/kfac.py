"""A K-FAC preconditioner for the least-squares solves of influence (``--preconditioner kfac``).

K-FAC (Martens & Grosse 2015; convolutions as in KFC, Grosse & Martens 2016) approximates the
Gauss-Newton block of a ``Linear``/``Conv2d`` layer with weights and bias ``W`` (units x d, the
bias as a last input column of ones) by a Kronecker product ``G (x) A`` that acts as
``W -> G W A``:

* ``A`` = the mean of ``a a^T`` over samples and positions, ``a`` the layer's input patch (with the 1);
* ``G`` = (1/N) sum over samples and positions of ``s s^T``, ``s`` the per-sample loss's
  gradient at the layer's output, with labels *sampled from the model's own prediction*
  (cross-entropy; a Gaussian of variance 1/2 around the output for a squared error), so that the
  expectation is the Gauss-Newton matrix rather than the empirical Fisher. Another loss uses
  the true labels (the empirical Fisher), recorded as such.

The factors are fitted on the Hessian sample itself (one forward and one backward over it), in
float64, and summed through the sample's ``reduce`` hook when it is sharded over processes.

GIF solves ``min ||H_J x - b||`` (H_J: n x |J|). With H ~ K_gamma = blockdiag(G (x) A) + gamma I,
the columns of J in one layer are ``K_gamma E_S`` for J's whole units S (the selection takes
units whole), and their Gram matrix acts as
``V -> (G^2)_SS V A^2 + 2 gamma G_SS V A + gamma^2 V``. In A's eigenbasis (A = Q diag(a) Q^T,
U = V Q) it is a |S| x |S| matrix per eigenvalue a_j:
``M_j = a_j^2 (G^2)_SS + 2 gamma a_j G_SS + gamma^2 I``. The preconditioner is the exact inverse
square root of that Gram matrix, ``P = Gram^{-1/2}``, so that ``K_gamma[:, J] P`` has orthonormal
columns: LSMR on ``min ||H_J P y - b||`` (x = P y) then needs few iterations where K-FAC is
a good model of H. Entries of J outside whole units (a layer's last, partial unit) get the
diagonal of the same Gram matrix; parameters of unfactored modules (BatchNorm, grouped
convolutions, ...) get a constant, the geometric mean of every other entry's P.

``gamma = weight_decay + damping x mean(eig G) x mean(eig A)`` per layer: the training
objective's decay is part of H, the relative ``damping`` keeps P bounded where K-FAC's
curvature vanishes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .hvp import Batch, Reduce, cross_entropy_sum, mse_sum
from .params import IndexSet, ParamSpace
from .selection import layers_of

DEFAULT_KFAC_DAMPING = 1e-2  # relative, see the module docstring (benchmarks/preconditioner.py)


@dataclass
class LayerFactors:
    name: str
    weight: str
    bias: Optional[str]
    A: torch.Tensor  # d x d (d = fan_in + 1 with a bias), float64
    G: torch.Tensor  # units x units, float64


@dataclass
class Factors:
    layers: list[LayerFactors]
    fisher: str  # "sampled" (Gauss-Newton) or "empirical"
    samples: int
    seconds: float = 0.0
    unfactored: list[str] = field(default_factory=list)  # unit layers K-FAC does not cover (grouped convs)


def _patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's inputs as rows (samples x positions, fan_in)."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    cols = nn.functional.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _factorable(module: Optional[nn.Module]) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (isinstance(module, nn.Conv2d) and module.groups == 1 and isinstance(module.padding, tuple)
            and module.padding_mode == "zeros")


def fit_factors(model: nn.Module, batches: Sequence[Batch], loss: Callable, total: int,
                reduce: Optional[Reduce] = None, seed: int = 0) -> Factors:
    """K-FAC factors of every Linear and (ungrouped) Conv2d of ``model`` over ``batches``.

    ``total``: the samples over all shards (the factors are means over it); ``reduce`` sums a
    tensor over the processes in place.
    """
    start = time.perf_counter()
    layers, _ = layers_of(model)
    hooked = [lay for lay in layers if _factorable(lay.module)]
    unfactored = [lay.name for lay in layers if not _factorable(lay.module)]
    first = next(model.parameters())
    device, dtype = first.device, first.dtype
    a_sum = {lay.name: None for lay in hooked}
    g_sum = {lay.name: None for lay in hooked}
    rows = {lay.name: 0 for lay in hooked}
    fisher = "sampled" if loss in (cross_entropy_sum, mse_sum) else "empirical"
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def hook_for(lay):
        def hook(module, inputs, output):
            a = _patches(module, inputs[0].detach()).double()
            if lay.bias is not None:
                a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)], dim=1)
            a_sum[lay.name] = a.T @ a if a_sum[lay.name] is None else a_sum[lay.name] + a.T @ a
            rows[lay.name] += a.shape[0]

            def grad_hook(grad):
                s = grad.detach().double()
                s = s.movedim(1, -1).reshape(-1, s.shape[1]) if s.dim() > 2 else s.reshape(-1, s.shape[-1])
                g_sum[lay.name] = s.T @ s if g_sum[lay.name] is None else g_sum[lay.name] + s.T @ s

            output.register_hook(grad_hook)
        return hook

    handles = [lay.module.register_forward_hook(hook_for(lay)) for lay in hooked]
    try:
        with torch.enable_grad():
            for x, y in batches:
                x = x.to(device, dtype if x.is_floating_point() else None)
                y = y.to(device)
                if x.is_floating_point():
                    x = x.detach().requires_grad_(True)
                    wrt = [x]
                else:  # token inputs: differentiate with respect to the first hooked layer's weight
                    wrt = [p for p in model.parameters() if p.requires_grad][:1]
                out = model(x)
                with torch.no_grad():
                    if loss is cross_entropy_sum:
                        probs = torch.softmax(out.detach().double(), dim=-1).cpu()
                        y = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=gen).reshape(
                            probs.shape[:-1]).to(device)
                    elif loss is mse_sum:
                        noise = torch.randn(out.shape, generator=gen, dtype=torch.float64) * math.sqrt(0.5)
                        y = (out.detach().double().cpu() + noise).to(device, out.dtype).reshape(y.shape)
                torch.autograd.grad(loss(out, y), wrt, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    out_layers = []
    for lay in hooked:
        A, G = a_sum[lay.name], g_sum[lay.name]
        if A is None or G is None:  # the forward never reached it
            unfactored.append(lay.name)
            continue
        count = torch.tensor([float(rows[lay.name])], dtype=torch.float64, device=A.device)
        if reduce is not None:
            reduce(A), reduce(G), reduce(count)
        out_layers.append(LayerFactors(lay.name, lay.weight, lay.bias, (A / count).cpu(), (G / total).cpu()))
    return Factors(out_layers, fisher, total, time.perf_counter() - start, unfactored)


def _inv_sqrt_psd(M: torch.Tensor) -> torch.Tensor:
    """M^{-1/2} of a batch of symmetric positive definite matrices."""
    w, V = torch.linalg.eigh(M)
    w = w.clamp(min=torch.finfo(M.dtype).tiny)
    return (V * w.rsqrt().unsqueeze(-2)) @ V.transpose(-1, -2)


@dataclass
class _Block:
    positions: torch.Tensor  # positions in J of the block's entries, as a |S| x d grid
    Q: torch.Tensor  # d x d, A's eigenvectors
    R: torch.Tensor  # d x |S| x |S|, M_j^{-1/2}


class KFACPreconditioner:
    """``P`` (symmetric positive definite) on J-vectors: ``apply(v) = P v`` (module docstring)."""

    def __init__(self, factors: Factors, space: ParamSpace, J: IndexSet, weight_decay: float = 0.0,
                 damping: float = DEFAULT_KFAC_DAMPING) -> None:
        start = time.perf_counter()
        self.size = J.size
        self.blocks: list[_Block] = []
        diag = torch.full((J.size,), float("nan"), dtype=torch.float64)
        position_of = torch.full((space.size,), -1, dtype=torch.int64)
        position_of[J.indices] = torch.arange(J.size)
        offsets = dict(zip(space.names, space.offsets))
        numels = dict(zip(space.names, space.numels))
        whole_units = 0
        for lay in factors.layers:
            units = lay.G.shape[0]
            fan_in = numels[lay.weight] // units
            grid = position_of[offsets[lay.weight]: offsets[lay.weight] + units * fan_in].reshape(units, fan_in)
            if lay.bias:
                grid = torch.cat([grid, position_of[offsets[lay.bias]: offsets[lay.bias] + units].reshape(units, 1)], 1)
            a, Q = torch.linalg.eigh(lay.A)
            a = a.clamp(min=0.0)
            g_eig = torch.linalg.eigvalsh(lay.G).clamp(min=0.0)
            gamma = weight_decay + damping * float(g_eig.mean()) * float(a.mean())
            gamma = gamma if gamma > 0 else 1.0  # a layer with no curvature at all: P = I there
            G2 = lay.G @ lay.G
            whole = (grid >= 0).all(dim=1)
            S = torch.nonzero(whole).reshape(-1)
            if S.numel():
                GS, G2S = lay.G[S][:, S], G2[S][:, S]
                eye = torch.eye(S.numel(), dtype=torch.float64)
                M = (a * a)[:, None, None] * G2S + (2 * gamma * a)[:, None, None] * GS + gamma ** 2 * eye
                self.blocks.append(_Block(grid[S], Q, _inv_sqrt_psd(M)))
                whole_units += S.numel()
            partial = (grid >= 0) & ~whole[:, None]
            if partial.any():  # the diagonal of the same Gram matrix
                o, i = torch.nonzero(partial, as_tuple=True)
                A2_diag = (Q * Q) @ (a * a)
                gram = G2.diagonal()[o] * A2_diag[i] + 2 * gamma * lay.G.diagonal()[o] * lay.A.diagonal()[i] + gamma ** 2
                diag[grid[o, i]] = gram.rsqrt()
        covered = torch.zeros(J.size, dtype=torch.bool)
        for b in self.blocks:
            covered[b.positions.reshape(-1)] = True
        loose = ~covered & torch.isnan(diag)
        scales = [b.R.diagonal(dim1=-2, dim2=-1).reshape(-1) for b in self.blocks]
        scales += [diag[~torch.isnan(diag)]]
        known = torch.cat(scales) if scales else torch.zeros(0, dtype=torch.float64)
        fill = float(known.log().mean().exp()) if known.numel() else 1.0
        diag[loose] = fill
        self.diag = diag  # NaN on block entries
        self._device_copies: dict = {}
        self.info = {"preconditioner": "kfac", "fisher": factors.fisher, "samples": factors.samples,
                     "damping": damping, "weight_decay": weight_decay, "layers": len(factors.layers),
                     "unfactored_layers": factors.unfactored, "whole_units": whole_units,
                     "diagonal_entries": int((~covered).sum()) - int(loose.sum()),
                     "constant_entries": int(loose.sum()), "constant": fill}
        self.seconds = factors.seconds + (time.perf_counter() - start)

    def _on(self, device: torch.device) -> tuple:
        """The factors on ``device``, copied there once (P is applied twice per LSMR iteration)."""
        key = str(device)
        if key not in self._device_copies:
            diag = self.diag.to(device)
            self._device_copies[key] = (torch.isnan(diag), torch.nan_to_num(diag), [
                (b.positions.to(device), b.Q.to(device), b.R.to(device)) for b in self.blocks])
        return self._device_copies[key]

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        blocked, diag, blocks = self._on(v.device)
        work = v.to(torch.float64)
        out = torch.where(blocked, torch.zeros_like(work), diag * work)
        for pos, Q, R in blocks:
            U = work[pos] @ Q  # |S| x d; column j: coordinates along A's eigenvector j
            out[pos] = torch.einsum("jst,tj->sj", R, U) @ Q.T
        return out.to(v.dtype)

    def matrix(self) -> torch.Tensor:
        """P as a dense matrix (tests)."""
        eye = torch.eye(self.size, dtype=torch.float64)
        return torch.stack([self.apply(e) for e in eye], dim=1)


def preconditioner(model: nn.Module, batches: Sequence[Batch], loss: Callable, total: int, J: IndexSet,
                   weight_decay: float = 0.0, damping: float = DEFAULT_KFAC_DAMPING,
                   reduce: Optional[Reduce] = None, seed: int = 0) -> KFACPreconditioner:
    factors = fit_factors(model, batches, loss, total, reduce, seed)
    return KFACPreconditioner(factors, ParamSpace.of(list(model.named_parameters())), J, weight_decay, damping)
