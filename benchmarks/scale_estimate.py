"""Scale on paper: seconds per H_J^T H_J product for ResNet-18 with a 50 000-image Hessian sample
on 1, 8 and 64 GPUs, from a measured cost and the all-reduce volume.

Measured here: the floating-point operations of one product per image (torch's FlopCounterMode
on gif's own product, CIFAR-style ResNet-18, 3 x 32 x 32 inputs, J = 10 % top-k outputs), and this
machine's seconds per image for the same product. Assumed (stated in the output, change them with
the flags): the GPUs' sustained throughput on this work and the all-reduce bandwidths.

Each product is two Hessian-vector products, and each all-reduces one |theta|-long float32 vector
(ring all-reduce moves 2 (N - 1) / N of it per GPU).

    python benchmarks/scale_estimate.py --json benchmarks/results/scale_estimate.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="images in the measured batch")
    ap.add_argument("--images", type=int, default=50000, help="the Hessian sample to estimate for")
    ap.add_argument("--gpu-tflops", type=float, default=40.0,
                    help="sustained TFLOP/s of one GPU on these products (an assumption; see the docs)")
    ap.add_argument("--nvlink-gbps", type=float, default=300.0, help="all-reduce bus bandwidth within a node, GB/s")
    ap.add_argument("--network-gbps", type=float, default=40.0, help="all-reduce bus bandwidth across nodes, GB/s")
    ap.add_argument("--latency-ms", type=float, default=0.05, help="latency per all-reduce step, ms")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gifcli.io.files import provenance, write_json
    from gifcli.math.hvp import HessianSample
    from gifcli.math.selection import output_scores, select
    from gifcli.models.zoo import ARCHITECTURES

    torch.manual_seed(0)
    model = ARCHITECTURES.get("resnet18")((3, 32, 32), 10).eval()
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    J = select(model, "topk-outputs", 0.1, output_scores(model, [(x, y)])).J
    hess = HessianSample(model, [(x, y)], mode="recompute")
    v = torch.randn(J.size)
    product = lambda: J.gather(hess.hvp(hess.hvp(J.scatter(v)), only=J))  # noqa: E731
    product()
    with FlopCounterMode(display=False) as counter:
        product()
    flops_per_image = counter.get_total_flops() / args.batch
    t = time.perf_counter()
    product()
    cpu_seconds_per_image = (time.perf_counter() - t) / args.batch
    params = sum(p.numel() for p in model.parameters())
    volume = 4 * params  # bytes of one all-reduced HVP

    def times(gpus: int) -> tuple[float, float]:
        compute = flops_per_image * args.images / gpus / (args.gpu_tflops * 1e12)
        if gpus == 1:
            return compute, 0.0
        bw = args.nvlink_gbps if gpus <= 8 else args.network_gbps
        # two all-reduces per product; a ring moves 2 (N - 1) / N of the vector in 2 (N - 1) steps
        comm = 2 * (2 * (gpus - 1) / gpus * volume / (bw * 1e9) + 2 * (gpus - 1) * args.latency_ms / 1e3)
        return compute, comm

    rows = []
    for gpus in (1, 8, 64):
        compute, comm = times(gpus)
        rows.append({"gpus": gpus, "compute_seconds": compute, "allreduce_seconds": comm,
                     "seconds_per_product": compute + comm, "communication_share": comm / (compute + comm)})
    # the smallest GPU count (in steps of 8, across nodes) where all-reducing costs as much as computing
    crossover = next(n for n in range(16, 10 ** 6, 8) if times(n)[1] >= times(n)[0])
    out = {"model": "resnet18 (CIFAR-style), 3x32x32", "parameters": params, "selected": J.size,
           "flops_per_image_per_product": flops_per_image, "cpu_seconds_per_image_here": cpu_seconds_per_image,
           "allreduce_bytes_per_hvp": volume, "assumptions": {k: getattr(args, k) for k in
                                                             ("gpu_tflops", "nvlink_gbps", "network_gbps",
                                                              "latency_ms", "images")},
           "rows": rows, "gpus_where_communication_equals_compute": crossover, "provenance": provenance()}
    print(json.dumps(out, indent=1))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
