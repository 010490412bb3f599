"""Lanczos on the Hessian through the same HVPs (Figure 3: the share of negative eigenvalues)."""
from __future__ import annotations

from typing import Callable, Optional

import torch

Operator = Callable[[torch.Tensor], torch.Tensor]


def lanczos(op: Operator, size: int, steps: int, dtype=torch.float64, device="cpu", seed: int = 0,
            progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Ritz values (ascending) of a symmetric operator after ``steps`` Lanczos steps.

    Full re-orthogonalisation against every previous vector keeps the Ritz values clean of
    ghost copies; memory is ``steps x size``.
    """
    steps = min(steps, size)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(size, generator=gen, dtype=torch.float64).to(device, dtype)
    q = q / q.norm()
    basis = [q]
    alphas, betas = [], []
    for k in range(steps):
        w = op(basis[-1]).to(dtype)
        alpha = float(w @ basis[-1])
        alphas.append(alpha)
        Q = torch.stack(basis, dim=1)
        for _ in range(2):  # twice is enough (Kahan)
            w = w - Q @ (Q.T @ w)
        beta = float(w.norm())
        if progress:
            progress(k + 1, steps)
        if k == steps - 1 or beta < 1e-10 * max(1.0, abs(alpha)):
            break
        betas.append(beta)
        basis.append(w / beta)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigvalsh(T)


def top_by_magnitude(eigenvalues: torch.Tensor, top: int) -> torch.Tensor:
    order = torch.argsort(eigenvalues.abs(), descending=True)
    return eigenvalues[order[:top]]
