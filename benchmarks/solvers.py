"""Solvers on the real systems: Hessian-vector products to a relative residual of 1e-2 and 1e-3.

On the remove-class system (label 8, shipped CNN) and the backdoor system (shipped backdoored
CNN), with the default selection and a 1 024-sample Hessian, for cg and lsmr with float32
(the model's) and float64 recurrences: the HVP products each needs to reach 1e-2 and 1e-3 of the
normal-equation residual, and the unlearning metrics of the solution stopped at each tolerance
(scale chosen on validation as usual).

    python benchmarks/solvers.py --json benchmarks/results/solvers.json
"""
from __future__ import annotations

import argparse
import json
import time

from common import log, runtime, task_named

from gifcli.core.args import UnlearnArgs
from gifcli.core.run import run
from gifcli.io.files import provenance, write_json


def products_to(history: list[float], tol: float) -> int | None:
    for i, r in enumerate(history):
        if r <= tol:
            return 1 + 2 * (i + 1)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="class:8,backdoor")
    ap.add_argument("--max-iter", type=int, default=120)
    ap.add_argument("--base", default="{}", help="JSON of UnlearnArgs fields shared by every run")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rt = runtime()
    base = json.loads(args.base)
    rows = []
    for spec in args.tasks.split(","):
        loaded, data, task = task_named(spec, args.data_dir)
        for solver in ("cg", "lsmr"):
            for recurrence in ("model", "float64"):
                # the solve to 1e-3 passes 1e-2 on its way: its residual history gives the products to both;
                # the solve stopped at 1e-2 is run again for its metrics
                uargs = UnlearnArgs(**{**base, "solver": solver, "recurrence": recurrence, "max_iter": args.max_iter})
                row = {"task": spec, "solver": solver, "recurrence": recurrence, "metrics": {}}
                for tol in (1e-3, 1e-2):
                    t = time.perf_counter()
                    result = run(task, loaded.model, data, uargs.replace(tol=tol), rt, loaded.context())
                    stats = result.outcome.influence.stats
                    row["metrics"][f"{tol:g}"] = {"base": result.base, "edited": result.edited, "scale": result.scale,
                                                  "iterations": stats["iterations"], "converged": stats["converged"],
                                                  "seconds": time.perf_counter() - t}
                    if tol == 1e-3:
                        history = stats["residual_history"]
                        row.update({"products_to_1e-2": products_to(history, 1e-2),
                                    "products_to_1e-3": products_to(history, 1e-3),
                                    "best_residual": min(history) if history else None,
                                    "products_run": stats["hvp_products"], "residual_history": history,
                                    "cond_estimate": stats.get("cond_estimate")})
                rows.append(row)
                log(spec, solver, recurrence, row["products_to_1e-2"], row["products_to_1e-3"],
                    f"best {row['best_residual']:.2e}")
    out = {"base_args": UnlearnArgs(**base).as_dict(), "max_iter": args.max_iter, "rows": rows,
           "provenance": provenance()}
    if args.json:
        write_json(args.json, out)
    print(json.dumps([{k: v for k, v in r.items() if k != "residual_history"} for r in rows], indent=1))


if __name__ == "__main__":
    main()
