"""Is the model at a stationary point? The measurement behind gif's default steps, on models known
to be at their optimum and off it.

For each model: the coherence of its per-sample gradients on its training data (|mean| / spread,
debiased; gifcli.methods.influence.steps.gradient_coherence), the samples it took to decide, and, for two forget
sets (a class, 100 random training samples), the older ratio |g + G| / |g| beside it (G on all the retained data), which depends
on the forget set's size. Models: the shipped converged CNN and backdoored CNN, and the user's
BN + residual net of benchmarks/off_optimum.py, stopped early and trained (``--off-optimum-work``,
made by that script).

    python benchmarks/stationarity.py --json benchmarks/results/stationarity.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import BACKDOOR_MODEL, MODEL, log, runtime

from gifcli.core.args import UnlearnArgs
from gifcli.methods.influence.steps import gradient_coherence, gradients
from gifcli.core.tasks import ClassRemoval, Target
from gifcli.io.files import provenance, write_json
from gifcli.pipelines.inputs import load_data_for
from gifcli.core.checkpoints import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--off-optimum-work", default="/tmp/gif_off_optimum")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rt = runtime()
    work = Path(args.off_optimum_work)
    models = [("shipped CNN (converged)", MODEL, 8), ("shipped backdoored CNN", BACKDOOR_MODEL, 8),
              ("user net, trained", work / "trained.safetensors", 3),
              ("user net, under-trained", work / "under-trained.safetensors", 3)]
    rows = []
    for name, path, label in models:
        if not Path(path).exists():
            log("skipped (run benchmarks/off_optimum.py first)", path)
            continue
        loaded = load_model(path)
        data = load_data_for(loaded, None, args.data_dir)
        model = loaded.model.eval()
        wd = float((loaded.meta.get("train_config") or {}).get("weight_decay", 0.0))
        t = time.perf_counter()
        measured = gradient_coherence(model, data.fit, 0, rt, wd)
        seconds = time.perf_counter() - t
        forgets = {"class": ClassRemoval(label).target(data).split, "100 random": data.fit.sample(100, 1)}
        # the older check: G on all of the retained data, |g + G| / |g|
        ratios = {}
        for k, split in forgets.items():
            keep = ~torch.isin(data.fit.indices, split.indices)
            _, _, record = gradients(model, Target(split, {}), len(data.fit), data.fit.where(keep),
                                     UnlearnArgs("gif", gradient_samples=0), rt, wd)
            ratios[k] = record["ratio"]
        row = {"model": name, "path": str(path), **measured, "ratios": ratios, "seconds": seconds}
        rows.append(row)
        log(name, f"coherence {measured['coherence']:.4f} on {measured['samples']}", "stationary" if
            measured["stationary"] else "off its optimum", {k: round(v, 2) for k, v in ratios.items()})
    if args.json:
        write_json(args.json, {"rows": rows, "provenance": provenance()})


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
