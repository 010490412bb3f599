"""One process with 2 threads against 2 processes with 1 thread each (torchrun, gloo), in one run.

On the shipped CNN with a 2 048-image Hessian sample and J = 10 % top-k outputs of label 8:
seconds per H_J^T H_J product (eq. 13; median over rounds), the first-order graphs each rank
keeps (bytes of the tensors they save), and each process's peak resident memory. Then
``--hvp-mode auto`` under a budget smaller than the graphs, which switches to recompute and says so.

    python benchmarks/distributed.py --json benchmarks/results/distributed_cpu.json
    python benchmarks/distributed.py --device cuda --nproc 2   # on a machine with 2 GPUs
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(args) -> None:
    import torch

    from gifcli.core.args import UnlearnArgs
    from gifcli.methods.influence.steps import hessian_sample, select
    from gifcli.core.tasks import ClassRemoval
    from gifcli.pipelines.inputs import load_data_for, runtime
    from gifcli.core.checkpoints import load_model

    torch.set_num_threads(args.threads)
    rt = runtime(args.device, 512, 0)
    loaded = load_model(ROOT / "checkpoints" / "mnist_cnn.safetensors")
    data = load_data_for(loaded, None, args.data_dir)
    model = loaded.model.to(rt.device).eval()
    task = ClassRemoval(8)
    uargs = UnlearnArgs(hessian_samples=args.samples, hvp_mode="retain")
    J = select(model, task.target(data), uargs, rt, len(data.fit)).J
    hess, info = hessian_sample(model, data.fit, uargs, rt)
    graph = hess.graph_bytes() * len(hess.batches)
    v = torch.randn(J.size, generator=torch.Generator().manual_seed(0)).to(rt.device)
    product = lambda: J.gather(hess.hvp(hess.hvp(J.scatter(v)), only=J))  # noqa: E731
    product()  # builds the kept graphs
    sync = torch.cuda.synchronize if rt.device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(args.rounds):
        rt.dist.barrier()
        sync()
        t = time.perf_counter()
        product()
        sync()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if rt.device.type == "cuda" else None
    ranks = rt.dist.gather(torch.tensor([peak, graph / 2**20], dtype=torch.float64)).reshape(-1, 2).tolist()
    from gifcli.dist import shutdown

    if rt.dist.is_main:
        print(json.dumps({"world": rt.dist.world, "threads": args.threads, "device": str(rt.device),
                          "product_seconds_median": statistics.median(times), "product_seconds": times,
                          "local_batches": len(hess.batches), "peak_rss_mib_per_rank": [r[0] for r in ranks],
                          "graph_mib_per_rank": [r[1] for r in ranks], "cuda_peak_mib_rank0": cuda_peak}))
    shutdown()


def launch(nproc: int, threads: int, args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    me = [str(Path(__file__).resolve()), "--worker", "--threads", str(threads), "--samples", str(args.samples),
          "--rounds", str(args.rounds), "--device", args.device] + (["--data-dir", args.data_dir] if args.data_dir else [])
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *me]
           if nproc > 1 else [sys.executable, *me])
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(p.stderr)
    return json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])


def auto_under_budget(args) -> str:
    budget = "20MiB"
    p = subprocess.run([sys.executable, "-m", "gifcli", "influence", "--forget-label", "8", "--mask", args.mask,
                        "--hessian-samples", str(args.samples), "--max-iter", "2", "--memory-budget", budget,
                        "--out", "/tmp/gif_auto_budget.safetensors", "--device", args.device]
                       + (["--data-dir", args.data_dir] if args.data_dir else []), capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(p.stderr)
    return next(line for line in p.stdout.splitlines() if line.startswith("hvp-mode auto"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--mask", default="/tmp/gif_dist_mask.json")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    from gifcli.io.files import provenance, write_json

    subprocess.run([sys.executable, "-m", "gifcli", "select", "--forget-label", "8", "--out", args.mask]
                   + (["--data-dir", args.data_dir] if args.data_dir else []), check=True, capture_output=True)
    runs = {"1 process, 2 threads": launch(1, 2, args), "1 process, 1 thread": launch(1, 1, args),
            f"{args.nproc} processes, 1 thread each": launch(args.nproc, 1, args)}
    one, two = runs["1 process, 1 thread"], runs[f"{args.nproc} processes, 1 thread each"]
    out = {"runs": runs,
           "speedup_vs_1_process_1_thread": one["product_seconds_median"] / two["product_seconds_median"],
           "speedup_vs_1_process_2_threads": runs["1 process, 2 threads"]["product_seconds_median"]
           / two["product_seconds_median"],
           "graph_per_rank_vs_1_process": two["graph_mib_per_rank"][0] / one["graph_mib_per_rank"][0],
           "auto_under_budget": auto_under_budget(args), "provenance": provenance()}
    print(json.dumps(out, indent=1))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
