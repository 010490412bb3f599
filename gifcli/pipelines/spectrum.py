"""gif spectrum: top Hessian eigenvalues by Lanczos through the same HVPs (Figure 3)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..core.args import Runtime, UnlearnArgs
from ..methods.influence.steps import hessian_sample
from ..data.datasets import Data
from ..errors import UsageError
from ..io.files import provenance, save_figure
from ..math.lanczos import lanczos, top_by_magnitude
from ..models.specs import set_eval
from ..core.checkpoints import Loaded


def spectrum(loaded: Loaded, data: Data, samples: int, top: int, steps: Optional[int], l2: Sequence[float], seed: int,
             rt: Runtime, hvp_mode: str = "auto") -> dict:
    if top <= 0:
        raise UsageError(f"--top must be positive, got {top}")
    steps = steps or 2 * top
    if steps < top:
        raise UsageError(f"--steps ({steps}) must be at least --top ({top})")
    model = set_eval(loaded.model.to(rt.device))
    args = UnlearnArgs(hessian_samples=samples, seed=seed, hvp_mode=hvp_mode)
    hess, hinfo = hessian_sample(model, data.fit, args, rt)
    hinfo.pop("_budget", None)
    start = time.perf_counter()
    param_dtype = hess.params[0].dtype
    # the Krylov basis is kept in float64 on the CPU (float32 on a GPU, for memory); products run in the model's dtype
    basis_dtype = torch.float32 if rt.device.type == "cuda" else torch.float64
    ritz = lanczos(lambda v: hess.hvp(v.to(param_dtype)), hess.space.size, steps, dtype=basis_dtype,
                   device=rt.device, seed=seed, progress=lambda i, n: rt.report("lanczos", i, n, ""))
    hess.release()
    seconds = time.perf_counter() - start
    per_l2 = []
    for lam in l2:
        # the Hessian of loss + lam/2 ||theta||^2 is H + lam I: every eigenvalue moves by lam
        top_vals = top_by_magnitude(ritz + lam, top)
        per_l2.append({"l2": lam, "top_eigenvalues": top_vals.tolist(),
                       "negative_share": float((top_vals < 0).double().mean())})
    return {"format": "gif-spectrum", "version": 1, "model": loaded.path, "model_sha256": loaded.sha,
            "hessian": hinfo, "hessian_samples": hess.n_samples, "lanczos_steps": len(ritz), "top": top,
            "seconds": seconds, "hvp_products": hess.products, "ritz_values": ritz.tolist(), "per_l2": per_l2,
            "provenance": provenance(kind="spectrum")}


def plot_spectrum(result: dict, path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    first = result["per_l2"][0]
    axes[0].plot(sorted(first["top_eigenvalues"], key=abs, reverse=True), marker=".", linestyle="")
    axes[0].set_yscale("symlog", linthresh=1e-4)
    axes[0].set_xlabel("rank by |eigenvalue|")
    axes[0].set_ylabel(f"eigenvalue (l2 = {first['l2']:g})")
    axes[1].plot([p["l2"] for p in result["per_l2"]], [100 * p["negative_share"] for p in result["per_l2"]], marker="o")
    axes[1].set_xscale("symlog", linthresh=1e-5)
    axes[1].set_xlabel("L2 weight lambda")
    axes[1].set_ylabel(f"negative share of the top {result['top']} (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
