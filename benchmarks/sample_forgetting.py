"""Sample forgetting on MNIST, measured with gif's own commands (each one a subprocess, timed alone).

``mislabeled``: flip a share of one class's training labels to another class, write the result as
a ``tensors:`` dataset, train the paper's CNN on it (configs/mnist_cnn.yaml), retrain it without
the flipped samples (``gif train --exclude``), and forget exactly the flipped samples with GIF,
the first-order ``grad`` step and PIF (scale chosen by the ``repair`` criterion on validation).
Reports that class's test accuracy and the overall test accuracy of every model, and the share of
the gap between the flipped-label model and the retrained one that each edit closes.

``random``: forget a random 1 % and 10 % of the training set (``gif forget-set --random``),
retrain without them, and compare GIF (its Hessian of all the training data, and of the remaining data only) and
``grad`` (the ``privacy`` criterion) and the unedited
model against the retrained one: Avg. Gap and the MIA share on the forget set and on held-out data.

    python benchmarks/sample_forgetting.py mislabeled --source 3 --target 8 --share 0.45 --json ...
    python benchmarks/sample_forgetting.py random --fractions 0.01,0.1 --json ...
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import MODEL, ROOT, flipped_mnist, log

from gifcli.io.files import provenance, write_json

CONFIG = ROOT / "configs" / "mnist_cnn.yaml"


def gif(*args: str) -> tuple[float, str]:
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "gifcli", *map(str, args)], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"gif {' '.join(map(str, args))} failed:\n{p.stderr}")
    return time.perf_counter() - start, p.stdout


def report(path: Path) -> dict:
    return json.loads(path.read_text())


def mislabeled(args, work: Path) -> dict:
    data = work / "mnist_flipped.safetensors"
    flipped, class_size = flipped_mnist(data, args.source, args.target, args.share, args.seed, args.data_dir,
                                        reuse=False)
    (work / "flipped.txt").write_text("\n".join(map(str, flipped.tolist())) + "\n")
    spec = f"tensors:{data}"
    forget = work / "flipped.json"
    gif("forget-set", "--dataset", spec, "--indices", work / "flipped.txt", "--out", forget)
    out: dict = {"source": args.source, "target": args.target, "share": args.share, "flipped": len(flipped),
                 "of_class": class_size, "dataset": spec}
    models = {"flipped": work / "flipped.safetensors", "retrained": work / "retrained.safetensors"}
    if not models["flipped"].exists():
        out["train_seconds"], _ = gif("train", "--config", CONFIG, "--dataset", spec, "--out", models["flipped"],
                                      "--device", "cpu")
        log("trained on flipped labels", f"{out['train_seconds']:.0f} s")
    if not models["retrained"].exists():
        out["retrain_seconds"], _ = gif("train", "--config", CONFIG, "--dataset", spec, "--exclude", forget,
                                        "--out", models["retrained"], "--device", "cpu")
        log("retrained without them", f"{out['retrain_seconds']:.0f} s")
    from gifcli import load_checkpoint

    for key, name in (("train_seconds", "flipped"), ("retrain_seconds", "retrained")):
        out[f"{key}_recorded"] = load_checkpoint(models[name])[1]["train_seconds"]  # the training loop alone
    methods = {"gif": [], "gif_remaining": ["--hessian-data", "remaining"], "grad": ["--method", "grad"],
               "pif": ["--method", "pif"]}
    for name, extra in methods.items():
        run = work / f"run-{name}"
        seconds, _ = gif("remove-samples", "--forget", forget, "--model", models["flipped"], "--scale-criterion",
                         "repair", "--out-dir", run, "--device", "cpu", *extra)
        models[name] = run / "edited.safetensors"
        out[f"{name}_seconds"] = seconds
        out[f"{name}_scale"] = report(run / "report.json")["scale"]
        log(name, f"{seconds:.0f} s")
    rows = {}
    for name, path in models.items():
        rep = work / f"eval-{name}.json"
        gif("evaluate", "--model", path, "--forget-label", args.source, "--json", rep, "--no-mia", "--device", "cpu")
        r = report(rep)
        overall = (r["forget"]["accuracy"] * r["forget"]["count"] + r["test"]["accuracy"] * r["test"]["count"]) / (
            r["forget"]["count"] + r["test"]["count"])
        rows[name] = {"class_test_accuracy": r["forget"]["accuracy"], "test_accuracy": overall}
    gap = rows["retrained"]["class_test_accuracy"] - rows["flipped"]["class_test_accuracy"]
    for name in methods:
        closed = rows[name]["class_test_accuracy"] - rows["flipped"]["class_test_accuracy"]
        rows[name]["gap_closed"] = closed / gap if gap else None
    out["models"] = rows
    return out


def random_forgetting(args, work: Path) -> dict:
    out = {}
    for fraction in (float(f) for f in args.fractions.split(",")):
        tag = f"{fraction:g}"
        forget = work / f"random-{tag}.json"
        gif("forget-set", "--model", MODEL, "--random", fraction, "--seed", args.seed, "--out", forget)
        retrained = work / f"retrained-{tag}.safetensors"
        entry: dict = {"fraction": fraction, "count": report(forget)["count"]}
        if not retrained.exists():
            entry["retrain_seconds"], _ = gif("train", "--config", CONFIG, "--exclude", forget, "--out", retrained,
                                              "--device", "cpu")
            log("retrained", tag, f"{entry['retrain_seconds']:.0f} s")
        from gifcli import load_checkpoint

        entry["retrain_seconds_recorded"] = load_checkpoint(retrained)[1]["train_seconds"]
        models = {"unedited": MODEL}
        for name, extra in (("gif", []), ("gif_remaining", ["--hessian-data", "remaining"]),
                            ("grad", ["--method", "grad"])):
            run = work / f"run-{name}-{tag}"
            seconds, _ = gif("remove-samples", "--forget", forget, "--model", MODEL, "--out-dir", run, "--device",
                             "cpu", *extra)
            entry[f"{name}_seconds"] = seconds
            entry[f"{name}_scale"] = report(run / "report.json")["scale"]
            models[name] = run / "edited.safetensors"
        rows = {}
        for name, path in models.items():
            rep = work / f"eval-{name}-{tag}.json"
            gif("evaluate", "--model", path, "--forget", forget, "--retrained", retrained, "--json", rep, "--device",
                "cpu")
            r = report(rep)
            rows[name] = {"forget_acc": r["forget"]["accuracy"], "retain_acc": r["retain"]["accuracy"],
                          "test_acc": r["test"]["accuracy"], "mia_forget": r["mia"]["forget"],
                          "mia_held_out": r["mia"]["held_out"], "avg_gap": r["retrained"]["avg_gap"],
                          "agreement_forget": r["retrained"]["agreement_forget"],
                          "kl_forget": r["retrained"]["kl_forget"]}
            log(tag, name, rows[name])
        ref = report(work / f"eval-unedited-{tag}.json")["retrained"]
        rows["retrained"] = {"forget_acc": ref["forget"]["accuracy"], "retain_acc": ref["retain"]["accuracy"],
                             "test_acc": ref["test"]["accuracy"], "mia_forget": ref["mia"]["forget"],
                             "mia_held_out": ref["mia"]["held_out"], "avg_gap": 0.0}
        entry["models"] = rows
        out[tag] = entry
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", choices=("mislabeled", "random"))
    ap.add_argument("--source", type=int, default=3)
    ap.add_argument("--target", type=int, default=8)
    ap.add_argument("--share", type=float, default=0.45)
    ap.add_argument("--fractions", default="0.01,0.1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/gif_sample_forgetting")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work = Path(args.work) / args.experiment
    work.mkdir(parents=True, exist_ok=True)
    result = mislabeled(args, work) if args.experiment == "mislabeled" else random_forgetting(args, work)
    out = {"experiment": args.experiment, "args": vars(args), "result": result, "provenance": provenance()}
    print(json.dumps(out, indent=1))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
