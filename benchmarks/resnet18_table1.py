"""The paper's Table 1 on ResNet-18 / MNIST, and what GIF costs on that model, in one resumable run.

Stages, each skipped when its result is already in the results file (a killed run continues
where it stopped; a stage's own folder is written by gif's commands, which never leave half a
file behind):

1. ``train``: ``gif train --config configs/mnist_resnet18.yaml`` (torchvision's resnet18, a few
   epochs), wall time and peak memory measured here;
2. ``retrain``: the same recipe with ``--exclude-label 8``: the reference;
3. ``remove_default``: ``gif remove-class --label 8`` with every default, timed against stage 1;
4. ``table1``: the four criteria x MR 5/10/30/50 %, the paper's step (``--target forget
   --newton-steps 1``), the scale chosen on gif's validation split by eq. 14's F1; self-loss is
   the loss on the class's training images (the paper's L_w), test loss the loss on the test
   images of the other classes (section 5 "Evaluation metrics"); accuracies likewise;
5. ``retrained_row``: the same four numbers for the retrained model;
6. ``cost``: seconds of one gradient over the Hessian sample and of one H_J^T H_J product
   (eq. 13), their ratio, and peak memory, each HVP mode in its own process.

    python benchmarks/resnet18_table1.py --store runs/resnet18 --json benchmarks/results/resnet18_table1.json

The checkpoints (45 MB each) stay in --store; the results file records the commands that make them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CRITERIA = ("topk-outputs", "topk-gradients", "threshold", "random")
RATIOS = (0.05, 0.1, 0.3, 0.5)
# The paper's Table 1 (Lyu et al., arXiv:2312.05586), for the side-by-side table only.
PAPER = {"topk-outputs": {"self": (6.23, 6.21, 5.13, 4.89), "test": (0.05, 0.11, 0.64, 0.69)},
         "topk-gradients": {"self": (6.24, 6.29, 4.95, 4.89), "test": (0.04, 0.12, 1.02, 0.81)},
         "threshold": {"self": (4.42, 4.81, 3.71, 4.33), "test": (0.09, 0.65, 1.78, 1.18)},
         "random": {"self": (4.42, 4.79, 3.36, 4.26), "test": (0.08, 0.60, 2.63, 1.46)}}


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def gif_cmd() -> list[str]:
    return [sys.executable, "-m", "gifcli"]


def run(cmd: list[str], log_path: Path) -> dict:
    """Run ``cmd``; its wall seconds and its own peak resident memory (``wait4``'s rusage)."""
    log("$", shlex.join(cmd))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        tail = log_path.read_text()[-2000:]
        raise SystemExit(f"command failed ({rc}): {shlex.join(cmd)}\n{tail}")
    return {"command": shlex.join(["gif"] + cmd[3:]) if cmd[:3] == gif_cmd() else shlex.join(cmd),
            "wall_seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024}


def checkpoint_meta(path: Path) -> dict:
    from gifcli.io.checkpoint import load_checkpoint

    _, meta = load_checkpoint(str(path))
    keep = ("test_accuracy", "test_loss", "validation_accuracy", "train_seconds", "history", "train_config",
            "excluded_label", "weights_sha256")
    return {k: meta.get(k) for k in keep if k in meta}


def stage_train(store: Path, config: str, extra: list[str], name: str) -> dict:
    out = store / f"{name}.safetensors"
    rec = run(gif_cmd() + ["train", "--config", config, "--out", str(out), *extra], store / f"{name}.log")
    return {**rec, "checkpoint": str(out), **checkpoint_meta(out)}


def stage_adopt(store: Path, source: Path, name: str) -> dict:
    """A checkpoint trained earlier by ``gif train`` on this machine: its own clock and command."""
    import shutil

    out = store / f"{name}.safetensors"
    if not out.exists():
        shutil.copyfile(source, out)
    meta = checkpoint_meta(out)
    from gifcli.io.checkpoint import load_checkpoint

    command = (load_checkpoint(str(out))[1].get("provenance") or {}).get("command")
    return {"command": command, "adopted_from": str(source), "wall_seconds": meta.get("train_seconds"),
            "checkpoint": str(out), **meta}


def read_report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def edit_row(report: dict) -> dict:
    e, b = report["edited"], report["base"]
    inf = report.get("influence") or {}
    stats = inf.get("stats") or {}
    return {"self_loss": e["forget"]["loss"], "self_accuracy": e["forget"]["accuracy"],
            "test_loss": e["test"]["loss"], "test_accuracy": e["test"]["accuracy"],
            "forget_test_accuracy": e["forget_test"]["accuracy"],
            "base_test_accuracy": b["test"]["accuracy"], "base_test_loss": b["test"]["loss"],
            "base_self_loss": b["forget"]["loss"], "base_self_accuracy": b["forget"]["accuracy"],
            "base_forget_test_accuracy": b["forget_test"]["accuracy"],
            "scale": report.get("scale"), "hyper": report.get("hyper"),
            "hvp_products": stats.get("hvp_products"), "solver_converged": stats.get("converged"),
            "final_relative_residual": stats.get("final_relative_residual"),
            "hvp_mode": (inf.get("hessian") or {}).get("hvp_mode"),
            "method_seconds": report.get("method_seconds"), "seconds": report.get("seconds")}


def stage_remove(store: Path, base: Path, folder: str, extra: list[str]) -> dict:
    out = store / folder
    rec = run(gif_cmd() + ["remove-class", "--label", "8", "--model", str(base), "--out-dir", str(out), *extra],
              store / f"{folder}.log")
    report = read_report(out)
    return {**rec, **edit_row(report), "selected": selected(out), "steps": report.get("steps"),
            "args": report.get("args")}


def selected(folder: Path):
    """|J| and the model's parameter count, from the run's mask file."""
    mask = json.loads((folder / "mask.json").read_text())
    return {"size": mask["selected"], "of": mask["total_parameters"]}


def stage_evaluate(store: Path, model: Path) -> dict:
    out = store / "retrained_eval.json"
    rec = run(gif_cmd() + ["evaluate", "--model", str(model), "--forget-label", "8", "--no-mia", "--json", str(out)],
              store / "retrained_eval.log")
    return {**rec, "report": json.loads(out.read_text())}


def probe(args) -> None:
    """Child process: time gradients and H_J^T H_J products in one HVP mode; print JSON."""
    import torch

    from gifcli.data.datasets import batches
    from gifcli.math.hvp import HessianSample, mean_loss_gradient
    from gifcli.math.selection import output_scores, select
    from gifcli.pipelines.inputs import load_data_for
    from gifcli.core.checkpoints import load_model

    loaded = load_model(args.probe_model)
    model = loaded.model.eval()
    data = load_data_for(loaded, None, None)
    sample = data.fit.sample(args.hessian_samples, seed=0)
    hb = list(batches(sample, args.batch_size))
    forget = data.fit.where(data.fit.labels == 8)
    fb = list(batches(forget, args.batch_size))
    J = select(model, "topk-outputs", 0.1, output_scores(model, fb, "abs")).J
    t = time.perf_counter()
    mean_loss_gradient(model, fb)
    forget_gradient = time.perf_counter() - t
    H = HessianSample(model, hb, mode=args.probe)
    w = torch.randn(J.size)
    product = lambda: J.gather(H.hvp(H.hvp(J.scatter(w)), only=J))  # noqa: E731  eq. (13)
    H.gradient(), product()  # warm-up; builds the kept graphs in retain mode
    grads, prods, ratios = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        H.gradient()
        t1 = time.perf_counter()
        product()
        t2 = time.perf_counter()
        grads.append(t1 - t0)
        prods.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    print(json.dumps({"mode": args.probe, "hessian_samples": len(sample), "parameters": J.space.size,
                      "selected": J.size, "gradient_seconds": statistics.median(grads),
                      "product_seconds": statistics.median(prods), "product_to_gradient": statistics.median(ratios),
                      "forget_gradient_seconds": forget_gradient, "forget_size": len(forget),
                      "repeats": args.repeats}))


def stage_cost(store: Path, base: Path, samples: int, repeats: int) -> dict:
    out = {}
    for mode in ("retain", "recompute"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", mode, "--probe-model", str(base),
               "--hessian-samples", str(samples), "--repeats", str(repeats)]
        rec = run(cmd, store / f"cost_{mode}.log")
        line = [l for l in (store / f"cost_{mode}.log").read_text().splitlines() if l.startswith("{")][-1]
        out[mode] = {**json.loads(line), "peak_rss_mib": rec["peak_rss_mib"], "wall_seconds": rec["wall_seconds"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="runs/resnet18", help="checkpoints and run folders (not committed)")
    ap.add_argument("--json", default="benchmarks/results/resnet18_table1.json")
    ap.add_argument("--config", default="configs/mnist_resnet18.yaml")
    ap.add_argument("--table-hessian-samples", type=int, default=256,
                    help="Hessian sample of the 16 Table 1 cells (the default remove-class keeps gif's default)")
    ap.add_argument("--table-extra", default="",
                    help="more remove-class options for the Table 1 cells, e.g. '--gradient-samples 4096' (a smaller "
                         "sample for the stationarity check, which does not change a --target forget edit)")
    ap.add_argument("--cost-hessian-samples", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--adopt-base", default=None,
                    help="use this checkpoint (made by gif train with --config) instead of training stage 1 again")
    ap.add_argument("--only", default=None, help="comma-separated stages to run (default: all, in order)")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--probe-model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--hessian-samples", type=int, default=1024, help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=512, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        return probe(args)

    from gifcli.io.files import provenance, write_json

    store = Path(args.store).resolve()
    store.mkdir(parents=True, exist_ok=True)
    results_path = Path(args.json)
    state = json.loads(results_path.read_text()) if results_path.exists() else {}
    state.setdefault("machine", f"{platform.machine()}, {os.cpu_count()} CPU cores")
    only = set(args.only.split(",")) if args.only else None
    base, retrained = store / "base.safetensors", store / "retrained_no8.safetensors"

    def stage(name: str, fn) -> None:
        if name in state or (only and name not in only):
            return
        log("stage", name)
        state[name] = fn()
        state["provenance"] = provenance(kind="benchmark")
        write_json(results_path, state)

    stage("train", lambda: (stage_adopt(store, Path(args.adopt_base), "base") if args.adopt_base
                            else stage_train(store, args.config, [], "base")))
    stage("retrain", lambda: stage_train(store, args.config, ["--exclude-label", "8"], "retrained_no8"))
    stage("remove_default", lambda: stage_remove(store, base, "remove-default", []))
    cells = state.setdefault("table1", {})
    for c in CRITERIA:
        for r in RATIOS:
            key = f"{c}-{r:g}"
            if key in cells or (only and "table1" not in only):
                continue
            log("stage table1", key)
            cells[key] = stage_remove(store, base, f"table1/{key}",
                                      ["--criterion", c, "--ratio", str(r), "--target", "forget", "--newton-steps", "1",
                                       "--hessian-samples", str(args.table_hessian_samples),
                                       *shlex.split(args.table_extra)])
            state["provenance"] = provenance(kind="benchmark")
            write_json(results_path, state)
    stage("retrained_row", lambda: stage_evaluate(store, retrained))
    stage("cost", lambda: stage_cost(store, base, args.cost_hessian_samples, args.repeats))
    for name, rec in [("remove-default", state.get("remove_default"))] + [
            (f"table1/{k}", v) for k, v in state.get("table1", {}).items()]:
        if rec is not None and (store / name / "report.json").exists():  # fields added since the stage ran
            rec.update(edit_row(read_report(store / name)), selected=selected(store / name))
    state["paper"] = PAPER
    write_json(results_path, state)
    log("done:", results_path)


if __name__ == "__main__":
    main()
