"""Which defaults? Unlearning quality of each choice, measured on the shipped MNIST models.

For every task and every combination of the choices below, one run of the unlearning core
(scale chosen on the validation split, metrics on the test set), plus the share of J whose
forget gradient is exactly zero (parameters the edit cannot move usefully):

* ``output_score``: ``abs`` (mean |pre-activation|, the paper's) or ``positive`` (mean of what a
  following ReLU passes on);
* ``hessian_data``: ``all`` (the data the model was trained on) or ``remaining`` (minus the
  forget set, eq. 9 with eps = -1);
* ``weight_decay``: 0, or the training objective's (``auto``: 5e-4 for the shipped models).

    python benchmarks/defaults.py --tasks class:8,class:3,backdoor --json benchmarks/results/defaults.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import time

from common import log, runtime, task_named

from gifcli.core.args import UnlearnArgs
from gifcli.methods.influence.method import hessian_data
from gifcli.core.run import run
from gifcli.methods.influence.steps import dead_share, target_gradient
from gifcli.io.files import provenance, write_json

CHOICES = {"output_score": ("abs", "positive"), "hessian_data": ("all", "remaining"), "weight_decay": (0.0, "auto")}


def summary(report: dict) -> dict:
    if "forget" in report:
        out = {"forget_acc": report["forget"]["accuracy"], "test_acc": report["test"]["accuracy"]}
        if "f1" in report:
            out["f1"] = report["f1"]
        return out
    return {k: report[k] for k in ("bd_data_backdoor_label_accuracy", "bd_data_true_label_accuracy", "test_accuracy",
                                   "attack_success_rate")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="class:8,class:3,backdoor")
    ap.add_argument("--base", default="{}", help="JSON of UnlearnArgs fields shared by every run")
    ap.add_argument("--choices", default=None, help="JSON {field: [values]} instead of the built-in grid")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    choices = json.loads(args.choices) if args.choices else CHOICES
    base = json.loads(args.base)
    rt = runtime()
    rows = []
    for spec in args.tasks.split(","):
        loaded, data, task = task_named(spec, args.data_dir)
        for values in itertools.product(*choices.values()):
            overrides = dict(zip(choices, values))
            uargs = UnlearnArgs(**{**base, **overrides})
            t = time.perf_counter()
            result = run(task, loaded.model, data, uargs, rt, loaded.context())
            seconds = time.perf_counter() - t
            infl = result.outcome.influence
            pool = hessian_data(task, data, uargs)
            g = target_gradient(loaded.model, task.target(data), len(pool), rt)
            row = {"task": spec, **{k: v for k, v in overrides.items()}, "scale": result.scale,
                   "base": summary(result.base), "edited": summary(result.edited),
                   "dead_share_of_J": dead_share(infl.J, g), "selected": infl.J.size,
                   "solver": {k: infl.stats.get(k) for k in ("iterations", "hvp_products", "final_relative_residual",
                                                             "converged")},
                   "seconds": seconds}
            rows.append(row)
            log(spec, overrides, row["edited"], f"dead {row['dead_share_of_J']:.3f}", f"{seconds:.0f} s")
    result = {"base_args": UnlearnArgs(**base).as_dict(), "choices": choices, "rows": rows, "provenance": provenance()}
    if args.json:
        write_json(args.json, result)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
