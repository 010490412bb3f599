"""What an edit costs against training: `gif remove-class --label L` with the defaults, beside one
epoch of the same recipe (`gif train --config configs/mnist_cnn.yaml --epochs 1`), measured in one run,
one after the other, on the same machine.

For each label: the wall seconds of one training epoch and of the edit (each a fresh process, from
its start to its exit), their ratio, the edit's phases (report.json's ``phases``; for a checkout
without them, ``--profile`` reads them from cProfile), its forget and test accuracy, the products
and the stationarity decision. ``--gif-root`` runs another checkout's gif (the same data, the same
machine), so before and after are measured back to back.

    python benchmarks/edit_cost.py --labels 0,3,8 --json benchmarks/results/edit_cost.json
    python benchmarks/edit_cost.py --labels 8 --gif-root ../old --profile --json /tmp/before.json
"""
from __future__ import annotations

import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, log

from gifcli.io.files import provenance, write_json

# cProfile's cumulative seconds of these functions are the phases of a checkout that records none
PROFILED = {"select": "select", "gradients": "gradients", "solve": "influences", "sweep": "sweep_scales",
            "evaluation": "unlearning_metrics", "writing": "write_run_files"}


def timed(command: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def profiled_phases(path: Path) -> dict:
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    out = {}
    for phase, name in PROFILED.items():
        cum = [v[3] for (file, _, func), v in stats.items() if func == name and "gifcli" in file]
        if cum:
            out[phase] = round(max(cum), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", default="8")
    ap.add_argument("--gif-root", default=str(ROOT), help="the checkout whose gif is measured")
    ap.add_argument("--config", default="configs/mnist_cnn.yaml")
    ap.add_argument("--options", default="", help="extra remove-class options, e.g. '--target forget'")
    ap.add_argument("--profile", action="store_true", help="phases from cProfile (a checkout without report phases)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    root = Path(args.gif_root).resolve()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label in (int(x) for x in args.labels.split(",")):
            epoch = timed([sys.executable, "-m", "gifcli", "train", "--config", str(ROOT / args.config), "--epochs", "1",
                           "--out", str(work / f"epoch{label}.safetensors"), "--device", "cpu"], root)
            run_dir = work / f"run{label}"
            prof = work / f"prof{label}"
            head = [sys.executable] + (["-m", "cProfile", "-o", str(prof)] if args.profile else [])
            edit = timed(head + ["-m", "gifcli", "remove-class", "--label", str(label), "--out-dir", str(run_dir),
                                 "--device", "cpu", *args.options.split()], root)
            report = json.loads((run_dir / "report.json").read_text())
            inf = report.get("influence") or {}
            row = {"label": label, "epoch_seconds": epoch, "edit_seconds": edit, "ratio": edit / epoch,
                   "forget_test_acc": report["edited"]["forget_test"]["accuracy"],
                   "test_acc": report["edited"]["test"]["accuracy"], "hyper": report.get("hyper"),
                   "hvp_products": (inf.get("stats") or {}).get("hvp_products"),
                   "phases": profiled_phases(prof) if args.profile else report.get("phases"),
                   "decision": report.get("decision"), "report_seconds": report.get("seconds")}
            rows.append(row)
            log(f"label {label}: epoch {epoch:.1f} s, edit {edit:.1f} s ({row['ratio']:.2f}x),",
                f"forget {100 * row['forget_test_acc']:.2f} %, test {100 * row['test_acc']:.2f} %", row["phases"])
    if args.json:
        write_json(args.json, {"rows": rows, "gif_root": str(root), "options": args.options,
                               "provenance": provenance()})


if __name__ == "__main__":
    main()
