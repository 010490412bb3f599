"""How tightly to solve: the default edit of every class of the shipped CNN at two solver settings,
scored on the validation split only (the scale criterion's own F1, and its two parts at the chosen
scale), with the products each took. The choice of ``--tol``/``--max-iter`` is made from this file;
no test-set number enters it.

    python benchmarks/solve_tolerance.py --json benchmarks/results/solve_tolerance.json
"""
from __future__ import annotations

import argparse
import json

from common import log, runtime, task_named

from gifcli.core.args import UnlearnArgs
from gifcli.core.run import run
from gifcli.io.files import provenance, write_json

SETTINGS = {"tol 2e-2, max-iter 100": {"tol": 2e-2, "max_iter": 100},
            "tol 1e-2, max-iter 30": {"tol": 1e-2, "max_iter": 30}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--settings", default=json.dumps(SETTINGS))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rt = runtime()
    rows = []
    for label in (int(x) for x in args.labels.split(",")):
        loaded, data, task = task_named(f"class:{label}", args.data_dir)
        for name, options in json.loads(args.settings).items():
            r = run(task, loaded.model, data, UnlearnArgs(method="gif", **options), rt, loaded.context(), report=False)
            chosen = max(r.outcome.search, key=lambda x: (x["objective"] is not None, x["objective"] or 0, -x["scale"]))
            row = {"label": label, "setting": name, "options": options, "hyper": r.outcome.hyper,
                   "products": r.outcome.influence.stats["hvp_products"],
                   "validation_f1": chosen["f1"], "validation_forget": chosen["forget"]["accuracy"],
                   "validation_others": chosen["test"]["accuracy"]}
            rows.append(row)
            log(label, name, f"products {row['products']}", f"F1 {chosen['f1']:.4f}",
                f"others {100 * chosen['test']['accuracy']:.2f} %", f"forget {100 * chosen['forget']['accuracy']:.2f} %")
    if args.json:
        write_json(args.json, {"rows": rows, "provenance": provenance()})


if __name__ == "__main__":
    main()
