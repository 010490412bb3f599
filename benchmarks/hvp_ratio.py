"""Cost of the GIF hot loop, measured as ratios to one gradient evaluation in one run.

On the MNIST ``cnn`` (trained checkpoint if given, else random weights), with a Hessian sample
of --samples training images and J = --ratio top-k outputs on the forget label, prints:

* seconds of one gradient, one HVP (each mode), one H_J^T H_J product, and their ratios;
* HVP products that ``cg`` and ``neumann`` need to reach relative residuals 1e-2 and 1e-3 of
  the GIF normal equations (eq. 13), on the same system.

    python benchmarks/hvp_ratio.py --checkpoint checkpoints/mnist_cnn.safetensors --json out.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from gifcli.data.datasets import DatasetSpec, batches as data_batches, load_data
from gifcli.io.checkpoint import load_checkpoint
from gifcli.io.files import provenance, write_json
from gifcli.math.hvp import HVP_MODES, HessianSample, mean_loss_gradient
from gifcli.math.selection import output_scores, select
from gifcli.math.solvers import cg, lsmr, neumann
from gifcli.models.zoo import ARCHITECTURES


def products_to(history: list[float], tol: float, per_iter: int, offset: int) -> int | None:
    for i, r in enumerate(history):
        if r <= tol:
            return offset + per_iter * (i + 1)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--label", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=9, help="timing rounds per variant")
    ap.add_argument("--cg-max-iter", type=int, default=100)
    ap.add_argument("--neumann-max-iter", type=int, default=300)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-solvers", action="store_true", help="time the products only")
    ap.add_argument("--output-score", default="abs", help="how J is scored (abs or positive)")
    args = ap.parse_args()
    dev = torch.device(args.device)

    data = load_data(DatasetSpec.parse("mnist"), args.data_dir)
    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint)
    else:
        torch.manual_seed(0)
        model = ARCHITECTURES.get("cnn")((1, 28, 28), 10).eval()
    model = model.to(dev).eval()
    sample = data.fit.sample(args.samples, seed=0)
    batches = [(x.to(dev), y.to(dev)) for x, y in data_batches(sample, args.batch_size)]
    forget = data.fit.where(data.fit.labels == args.label)
    forget_batches = [(x.to(dev), y.to(dev)) for x, y in data_batches(forget, 512)]
    J = select(model, "topk-outputs", args.ratio, output_scores(model, forget_batches, args.output_score)).J
    g = mean_loss_gradient(model, forget_batches) * (len(forget) / len(data.fit))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    # "retain"/"recompute"/"forward" are gif's modes ("retain"/"recompute" with gif's cheaper
    # conv double backward and J-structured products, gifcli/math/fastconv.py); the "_builtin"
    # variants differentiate PyTorch's own convolution backward, as the paper's reference code
    # does ("recompute_builtin" is the paper-style product).
    variants = {m: dict(mode=m) for m in HVP_MODES}
    variants["retain_builtin"] = dict(mode="retain", fast_conv=False)
    variants["recompute_builtin"] = dict(mode="recompute", fast_conv=False)
    v = torch.randn(J.space.size, device=dev)
    vJ = torch.randn(J.size, device=dev)

    def once(fn) -> float:
        t = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t

    # This machine's timings drift by +-30 % between seconds, so every round times a gradient,
    # one HVP and one H_J^T H_J product back to back and the ratio is taken within the round;
    # the figures reported are medians over rounds.
    t_grad_all, t_hvp, t_normal, r_hvp, r_normal = [], {}, {}, {}, {}
    for name, kw in variants.items():
        Hn = HessianSample(model, batches, **kw)
        product = lambda Hn=Hn: J.gather(Hn.hvp(Hn.hvp(J.scatter(vJ)), only=J))  # noqa: E731  eq. (13)
        Hn.hvp(v), product(), Hn.gradient()  # warm-up (and builds the kept graphs)
        rounds = args.repeats if kw["mode"] != "recompute" else max(2, args.repeats // 2)
        rows = []
        for _ in range(rounds):
            tg, th, tn = once(Hn.gradient), once(lambda: Hn.hvp(v)), once(product)
            rows.append((tg, th, tn))
        t_grad_all += [r[0] for r in rows]
        t_hvp[name] = statistics.median(r[1] for r in rows)
        t_normal[name] = statistics.median(r[2] for r in rows)
        r_hvp[name] = statistics.median(r[1] / r[0] for r in rows)
        r_normal[name] = statistics.median(r[2] / r[0] for r in rows)
        Hn.release()
    t_grad = statistics.median(t_grad_all)
    H = HessianSample(model, batches)
    normal = lambda w: J.gather(H.hvp(H.hvp(J.scatter(w)), only=J))  # noqa: E731  eq. (13)

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "device": str(dev),
        "model": args.checkpoint or "cnn (random weights)",
        "parameters": J.space.size,
        "selected": J.size,
        "hessian_samples": len(sample),
        "batch_size": args.batch_size,
        "rounds": args.repeats,
        "seconds": {"gradient": t_grad, **{f"hvp_{m}": t for m, t in t_hvp.items()},
                    **{f"normal_product_{m}": t for m, t in t_normal.items()}},
        "ratios_to_gradient": {**{f"hvp_{m}": r for m, r in r_hvp.items()},
                               **{f"normal_product_{m}": r for m, r in r_normal.items()}},
    }
    if not args.no_solvers:
        rhs = J.gather(H.hvp(-g))
        _, cg_stats = cg(normal, rhs, tol=1e-3, max_iter=args.cg_max_iter)
        _, ls_stats = lsmr(lambda w: H.hvp(J.scatter(w)), lambda u: J.gather(H.hvp(u, only=J)), -g, J.size, tol=1e-3,
                           max_iter=args.cg_max_iter, recurrence_dtype=torch.float64)
        _, nm_stats = neumann(normal, rhs, tol=1e-3, max_iter=args.neumann_max_iter)
        power = nm_stats.operator_calls - nm_stats.iterations  # power-iteration calls
        result["solver_products"] = {
            "cg_to_1e-2": products_to(cg_stats.residuals, 1e-2, 2, 1),
            "cg_to_1e-3": products_to(cg_stats.residuals, 1e-3, 2, 1),
            "lsmr_to_1e-2": products_to(ls_stats.residuals, 1e-2, 2, 1),
            "lsmr_to_1e-3": products_to(ls_stats.residuals, 1e-3, 2, 1),
            "neumann_to_1e-2": products_to(nm_stats.residuals, 1e-2, 2, 1 + 2 * power),
            "neumann_to_1e-3": products_to(nm_stats.residuals, 1e-3, 2, 1 + 2 * power),
            "neumann_power_iteration_products": 2 * power,
            "neumann_products_run": 1 + 2 * nm_stats.operator_calls,
            "neumann_final_residual": nm_stats.final_residual,
            "neumann_restarts": nm_stats.restarts,
            "cg_products_run": 1 + 2 * cg_stats.operator_calls,
            "cg_final_residual": cg_stats.final_residual,
            "cg_residual_history": cg_stats.residuals,
            "neumann_residual_history": nm_stats.residuals,
            "neumann_scale": nm_stats.scale,
        }
    result["provenance"] = provenance()
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
