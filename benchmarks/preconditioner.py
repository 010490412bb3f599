"""K-FAC-preconditioned LSMR against plain LSMR: Hessian-vector products to the same residual.

On the remove-class system (label 8) of the shipped CNN and of a torchvision ResNet-18 (its own
stem, the grey channel repeated into 3, trained here for one epoch on 20 000 images with plain
PyTorch and imported with ``gif import``): the default J (topk-outputs, 10 % of each layer), a 1 024-sample Hessian of
all the training data, the paper's right-hand side (the forget gradient).

* plain LSMR is run once to a relative residual of 1e-4; its residual history gives the products
  it needs to reach any residual above that;
* preconditioned LSMR stops at tol 1e-2 and 1e-3 of *its* (preconditioned) residual; the
  unpreconditioned residual of its answer is measured (three products, counted), and set against
  the products plain LSMR needed to reach that same residual;
* both are also judged by their error against the reference answer (plain LSMR run to a third of
  the smallest tol): the preconditioned answer's, and plain LSMR's given the same products;
* the preconditioner's own cost (one forward and backward over the Hessian sample, the factors'
  eigendecompositions) is timed and converted to products at the plain solve's seconds per product.

Timings on a shared 2-core machine are fragile: compare seconds within one run only.

    python benchmarks/preconditioner.py --json benchmarks/results/preconditioner.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from common import ROOT, log, runtime, task_named

from gifcli.core.args import UnlearnArgs
from gifcli.methods.influence.steps import hessian_sample, select, target_gradient
from gifcli.core.tasks import ClassRemoval
from gifcli.io.files import provenance, write_json
from gifcli.methods.influence.lstsq import SolverOptions, influence
from gifcli.math.kfac import preconditioner
from gifcli.models.specs import set_eval
from gifcli.pipelines.inputs import load_data_for
from gifcli.core.checkpoints import load_model


def products_to(history: list[float], residual: float) -> int | None:
    """Products plain LSMR needed to reach ``residual``: A^T b, then two per iteration."""
    for i, r in enumerate(history):
        if r <= residual:
            return 1 + 2 * (i + 1)
    return None


def resnet18_checkpoint(folder: Path, data_dir: str | None, epochs: int, samples: int, seed: int = 0) -> Path:
    """torchvision's resnet18 trained briefly on ``samples`` MNIST training images with plain PyTorch
    (SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 128), imported with gif import."""
    import subprocess
    import sys

    import torchvision

    from gifcli.data.datasets import load_raw

    raw = load_raw("mnist", "train", data_dir)
    x = raw.images.float() / 255
    mean, std = float(x.mean()), float(x.std())
    x = ((x - mean) / std).repeat(1, 3, 1, 1)
    y = raw.labels.long()
    torch.manual_seed(seed)
    keep = torch.randperm(len(y))[:samples]
    x, y = x[keep], y[keep]
    net = torchvision.models.get_model("resnet18", weights=None, num_classes=10)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(y))
        for k, start in enumerate(range(0, len(y), 128)):
            idx = order[start:start + 128]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
            if k % 100 == 0:
                log(f"resnet18 epoch {epoch + 1} batch {k}")
    torch.save(net.state_dict(), folder / "resnet18.pt")
    out = folder / "resnet18.safetensors"
    cmd = [sys.executable, "-m", "gifcli", "import", "--arch", "torchvision:resnet18", "--weights",
           str(folder / "resnet18.pt"), "--dataset", "mnist", "--channels", "3", "--mean", f"{mean},{mean},{mean}",
           "--std", f"{std},{std},{std}", "--out", str(out), "--device", "cpu"]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    subprocess.run(cmd, check=True)
    return out


def measure(name: str, loaded, data, task, dampings, tols, max_iter: int, samples: int) -> dict:
    rt = runtime()
    args = UnlearnArgs(method="gif", hessian_samples=samples)
    model = set_eval(loaded.model)
    target, pool = task.target(data), task.training(data)
    J = select(model, target, args, rt, len(pool)).J
    g = target_gradient(model, target, len(pool), rt)
    hess, _ = hessian_sample(model, pool, args, rt)
    row = {"model": name, "parameters": hess.space.size, "J": J.size, "hessian_samples": samples}
    t = time.perf_counter()
    plain = influence("gif", hess, J, g, SolverOptions(tol=min(tols) / 3, max_iter=max_iter))
    reference = plain.delta  # the most accurate answer this run has: errors below are measured against it

    def error(delta: torch.Tensor) -> float:
        return float((delta - reference).norm() / reference.norm())
    seconds = time.perf_counter() - t
    per_product = seconds / max(plain.stats.products, 1)
    history = plain.stats.residuals
    row["plain"] = {"products": plain.stats.products, "iterations": plain.stats.iterations,
                    "final_residual": plain.stats.final_residual, "seconds": seconds,
                    "seconds_per_product": per_product, "residual_history": history,
                    **{f"products_to_{tol:g}": products_to(history, tol) for tol in tols}}
    log(name, f"plain: {plain.stats.products} products to {plain.stats.final_residual:.2e}, "
        f"{per_product:.2f} s a product")
    row["kfac"] = []
    for damping in dampings:
        t = time.perf_counter()
        P = preconditioner(model, hess.batches, rt.loss, hess.n_samples, J, 0.0, damping, seed=0)
        fit = time.perf_counter() - t
        for tol in tols:
            t = time.perf_counter()
            pre = influence("gif", hess, J, g, SolverOptions(tol=tol, max_iter=max_iter), preconditioner=P.apply)
            solve = time.perf_counter() - t
            reached = pre.stats.true_residual
            need = products_to(history, reached)
            entry = {"damping": damping, "tol": tol, "products": pre.stats.products,
                     "iterations": pre.stats.iterations, "converged": pre.stats.converged,
                     "unpreconditioned_residual": reached, "plain_products_to_same": need,
                     "preconditioner_seconds": fit, "preconditioner_products_equivalent": fit / per_product,
                     "solve_seconds": solve, "info": P.info,
                     "ratio": None if need is None else need / (pre.stats.products + fit / per_product),
                     "error": error(pre.delta)}
            # plain LSMR given the same products: its error against the reference
            same = influence("gif", hess, J, g, SolverOptions(tol=1e-12, max_iter=max(1, (pre.stats.products - 1) // 2)))
            entry["plain_at_same_products"] = {"products": same.stats.products, "error": error(same.delta),
                                               "residual": same.stats.final_residual}
            row["kfac"].append(entry)
            log(name, f"kfac damping {damping:g} tol {tol:g}: {pre.stats.products} products (+{fit / per_product:.1f}"
                f" for the factors) to {reached:.2e}, error {entry['error']:.2e}; plain needs {need}; plain at the same "
                f"products: error {entry['plain_at_same_products']['error']:.2e}")
    hess.release()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="cnn,resnet18")
    ap.add_argument("--dampings", default="1e-3,1e-2,1e-1")
    ap.add_argument("--tols", default="1e-2,1e-3")
    ap.add_argument("--max-iter", type=int, default=300)
    ap.add_argument("--hessian-samples", type=int, default=1024)
    ap.add_argument("--resnet-epochs", type=int, default=1)
    ap.add_argument("--resnet-samples", type=int, default=20000, help="training images the ResNet-18 sees")
    ap.add_argument("--resnet-checkpoint", default=None, help="reuse a gif checkpoint of the ResNet-18")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dampings = [float(d) for d in args.dampings.split(",")]
    tols = [float(t) for t in args.tols.split(",")]
    rows = []
    for name in args.models.split(","):
        if name == "cnn":
            loaded, data, task = task_named("class:8", args.data_dir)
        elif name == "resnet18":
            path = Path(args.resnet_checkpoint) if args.resnet_checkpoint else resnet18_checkpoint(
                Path(tempfile.mkdtemp()), args.data_dir, args.resnet_epochs, args.resnet_samples)
            loaded = load_model(path)
            data, task = load_data_for(loaded, None, args.data_dir), ClassRemoval(8)
        else:
            raise SystemExit(f"unknown model {name!r}")
        rows.append(measure(name, loaded, data, task, dampings, tols, args.max_iter, args.hessian_samples))
    doc = {"rows": rows, "provenance": provenance(), "script": str(Path(__file__).relative_to(ROOT))}
    if args.json:
        write_json(Path(args.json), doc)
    print(json.dumps([{k: v for k, v in r.items() if k not in ("plain", "kfac")} for r in rows]))


if __name__ == "__main__":
    main()
