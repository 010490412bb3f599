"""The default edit on converged models against the previous default: a table from harness part files.

    python benchmarks/fast_default_table.py PARTS... --json benchmarks/results/converged/fast_default.json

PARTS are ``harness.py`` result files whose rows include the default (``gif``) and the variants to show;
the previous default's rows come from ``benchmarks/results/converged/harness.json`` (three seeds).
Prints the markdown table of docs/results.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import ROOT

from gifcli.io.files import provenance, write_json

SETTINGS = ("class8", "mislabeled", "backdoor", "random10")
EPOCH_SECONDS = 12.9  # one epoch of configs/mnist_cnn.yaml alone on the 2 cores (benchmarks/results/edit_cost.json)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="+")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for part in args.parts:
        for name, setting in json.loads(Path(part).read_text())["settings"].items():
            rows += [{**r, "part": part} for r in setting["rows"]]
    old = json.loads((ROOT / "benchmarks/results/converged/harness.json").read_text())["settings"]
    lines = ["| setting | previous default: Avg. Gap, 3 seeds | its seed 0 | default now: Avg. Gap (seeds) | agreement with retrained | KL(retrained ‖ edited) | seconds | seconds / 20 epochs alone |",
             "|---|---|---|---|---|---|---|---|"]
    out = {}
    for s in SETTINGS:
        prev = [r for r in old[s]["rows"] if r["method"] == "gif"]
        gaps = [100 * r["avg_gap"] for r in prev]
        seed0 = next(100 * r["avg_gap"] for r in prev if r["seed"] == 0)
        now = {r["seed"]: r for r in rows if r["setting"] == s and r["method"] == "gif"}  # the last file wins
        if not now:
            continue
        g = [100 * r["avg_gap"] for r in now.values()]
        shown = f"{statistics.fmean(g):.2f}" + (f" ± {statistics.stdev(g):.2f}" if len(g) > 1 else "") + \
            f" ({', '.join(str(k) for k in sorted(now))})"
        agree = statistics.fmean(100 * r["agreement_forget"] for r in now.values())
        kl = statistics.fmean(r["kl_forget"] for r in now.values())
        secs = statistics.fmean(r["method_seconds"] for r in now.values())
        lines.append(f"| {s} | {statistics.fmean(gaps):.2f} ± {statistics.stdev(gaps):.2f} | {seed0:.2f} | {shown} | "
                     f"{agree:.1f} % | {kl:.3f} | {secs:.0f} | {secs / (20 * EPOCH_SECONDS):.3f} |")
        out[s] = {"previous": {"gaps": gaps}, "now": {str(k): {key: v[key] for key in ("avg_gap", "agreement_forget",
                                                                                       "kl_forget", "method_seconds",
                                                                                       "rte", "hyper", "part")}
                                                     for k, v in now.items()}}
    print("\n".join(lines))
    if args.json:
        write_json(args.json, {"settings": out, "epoch_seconds": EPOCH_SECONDS, "provenance": provenance()})


if __name__ == "__main__":
    main()
