"""Lanczos on the Hessian through the same HVPs (Figure 3: the share of negative eigenvalues)."""
from __future__ import annotations

from typing import Callable, Optional

import torch

Operator = Callable[[torch.Tensor], torch.Tensor]


def lanczos(op: Operator, size: int, steps: int, dtype=torch.float64, device="cpu", seed: int = 0,
            progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Ritz values (ascending) of a symmetric operator after ``steps`` Lanczos steps.

    Full re-orthogonalisation against every previous vector keeps the Ritz values clean of
    ghost copies. The basis lives in one preallocated ``steps x size`` matrix whose first k rows
    are used at step k (no copies): memory is ``steps x size`` values.
    """
    steps = min(steps, size)
    gen = torch.Generator().manual_seed(seed)
    Q = torch.empty(steps, size, dtype=dtype, device=device)
    q = torch.randn(size, generator=gen, dtype=torch.float64).to(device, dtype)
    Q[0] = q / q.norm()
    alphas, betas = [], []
    for k in range(steps):
        w = op(Q[k]).to(dtype)
        alpha = float(w @ Q[k])
        alphas.append(alpha)
        basis = Q[: k + 1]
        for _ in range(2):  # twice is enough (Kahan)
            w = w - basis.T @ (basis @ w)
        beta = float(w.norm())
        if progress:
            progress(k + 1, steps)
        if k == steps - 1 or beta < 1e-10 * max(1.0, abs(alpha)):
            break
        betas.append(beta)
        Q[k + 1] = w / beta
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigvalsh(T)


def top_by_magnitude(eigenvalues: torch.Tensor, top: int) -> torch.Tensor:
    order = torch.argsort(eigenvalues.abs(), descending=True)
    return eigenvalues[order[:top]]
