"""gif compare: unlearning methods side by side on one forget request, over seeds.

Every cell (method, criterion, ratio, seed) is one run of the core and writes its own folder
(``cells/<method>-<criterion>-<ratio>-s<seed>/``: mask, influence, edited model, report), so
nothing is reused between cells or between runs: a second compare into the same folder with
other arguments recomputes everything it reports. Methods without an index set J (ssd,
finetune, neggrad, neggrad+, retrain) get one cell per seed. Each row has the field's metrics
(forget, retain and test accuracy, the entropy and SVC membership attacks, attack success for a
backdoor) and, against the retrained model of the same seed (the ``retrain`` cells, or
``--retrained``), the Avg. Gap and the run-time efficiency (method seconds / retraining seconds).
``results.json`` holds every row, ``results.md`` mean +- std over seeds, ``results.png`` Figure 4.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from ..core.args import Runtime, UnlearnArgs
from ..core.checkpoints import Loaded
from ..core.methods import METHODS
from ..core.metrics import COLUMNS as METRIC_COLUMNS
from ..core.metrics import avg_gap, column, unlearning_metrics
from ..core.tasks import Task
from ..data.datasets import Data
from ..errors import UsageError
from ..io.files import make_folder, provenance, save_figure, write_json, write_text
from .evaluate import GAP_KEYS
from .unlearn import unlearn_to_folder

DEFAULT_CRITERIA = ("topk-outputs",)
DEFAULT_RATIOS = (0.05, 0.1, 0.3, 0.5)
DEFAULT_SEEDS = (0,)


@dataclass(frozen=True)
class CompareConfig:
    """One comparison: which methods, over which seeds, each with its own arguments.

    ``arguments`` holds, per method, the UnlearnArgs of its first cell; a method that selects J
    (its arguments have ``criterion`` and ``ratio``) is run on every criterion x ratio of the grid.
    """

    methods: tuple[str, ...]
    arguments: dict  # method -> UnlearnArgs
    criteria: tuple[str, ...] = DEFAULT_CRITERIA
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    svc: bool = True

    @staticmethod
    def default_methods() -> tuple[str, ...]:
        """The methods compared when none are named: those that say so (``Method.compared``)."""
        return tuple(name for name, method in METHODS.items() if method.compared)

    def cells(self) -> list[UnlearnArgs]:
        out = []
        for seed in self.seeds:
            for m in self.methods:
                out += METHODS.get(m).grid(self.arguments[m].replace(seed=seed), self.criteria, self.ratios)
        return out


def tag_of(args: UnlearnArgs) -> str:
    if args.has("criterion") and args.has("ratio"):
        return f"{args.method}-{args.criterion}-{args.ratio:g}-s{args.seed}"
    return f"{args.method}-s{args.seed}"


def compare(loaded: Loaded, data: Data, task: Union[Task, Callable[[int], Task]], config: CompareConfig,
            rt: Runtime, out_dir: Path, retrained: Optional[Loaded] = None) -> dict:
    """``task`` is one forget request, or a function of the seed (a forget set drawn per seed)."""
    task_for = task if callable(task) and not isinstance(task, Task) else (lambda seed: task)
    seeds, svc = config.seeds, config.svc
    cells = config.cells()
    if not cells:
        raise UsageError("nothing to compare")
    make_folder(out_dir)
    rows, references = [], {}
    if retrained is not None:
        references = {s: {"metrics": unlearning_metrics(retrained.model, data, task_for(s), rt, svc=svc),
                          "seconds": retrained.meta.get("train_seconds"), "model": retrained.path} for s in seeds}
    # the reference method (retraining) first, so every other cell of its seed is measured against it
    for i, args in enumerate(sorted(cells, key=lambda a: not METHODS.get(a.method).reference)):
        tag = tag_of(args)
        rt.report("compare", i, len(cells), tag)
        task = task_for(args.seed)
        result, report, _ = unlearn_to_folder(loaded, data, task, args, rt, out_dir / "cells" / tag,
                                              kind="compare-cell")
        metrics = unlearning_metrics(result.model, data, task, rt, svc=svc)
        own = args.options.as_dict()
        row = {"method": args.method, "criterion": own.get("criterion"), "ratio": own.get("ratio"), "seed": args.seed,
               "task": task.describe(),
               "hyper": result.outcome.hyper, "method_seconds": result.outcome.seconds,
               "selected": METHODS.get(args.method).report(result.outcome).selected,
               "solver_stats": {k: (report.get("influence") or {}).get("stats", {}).get(k)
                                for k in ("iterations", "hvp_products", "final_relative_residual", "converged")},
               **metrics, "validation_sweep": result.outcome.search, "warnings": report["warnings"], "cell": tag}
        if METHODS.get(args.method).reference and retrained is None:
            references[args.seed] = {"metrics": metrics, "seconds": result.outcome.seconds, "model": tag}
        rows.append(row)
    for row in rows:
        ref = references.get(row["seed"])
        if ref is not None:
            row["avg_gap"] = avg_gap(row, ref["metrics"], GAP_KEYS)
            row["rte"] = row["method_seconds"] / ref["seconds"] if ref.get("seconds") else None
    rt.report("compare", len(cells), len(cells), "done")
    results = {"format": "gif-compare", "version": 2, "model": loaded.path, "model_sha256": loaded.sha,
               "task": task_for(seeds[0]).describe(), "label": task_for(seeds[0]).describe().get("label"),
               "methods": list(config.methods),
               "criteria": list(config.criteria), "ratios": list(config.ratios), "seeds": list(seeds),
               "args": {m: a.as_dict() for m, a in config.arguments.items()},
               "base": {str(s_): unlearning_metrics(loaded.model, data, task_for(s_), rt, svc=svc) for s_ in seeds},
               "retrained": retrained.path if retrained else None,
               "references": {str(k): v for k, v in references.items()}, "rows": rows,
               "summary": summarise(rows), "provenance": provenance(kind="compare")}
    if rt.dist.is_main:
        write_json(out_dir / "results.json", results)
        write_text(out_dir / "results.md", markdown_table(results))
    return results


# results.md's columns (gif compare's own rows): shares as percentages, the Avg. Gap in points
TABLE = ("forget acc", "retain acc", "test acc", "MIA entropy", "MIA SVC conf.", "attack success",
         "agree. w/ retrained", "KL(retrained‖·)", "Avg. Gap", "seconds", "RTE")
COLUMNS = tuple((f"{name} %" if METRIC_COLUMNS[name][1] and name != "Avg. Gap" else name,
                 (lambda r, n=name: None if (v := column(r, n)) is None else 100 * v if METRIC_COLUMNS[n][1] else v))
                for name in TABLE)


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds of every column, per (method, criterion, ratio)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["method"], r["criterion"], r["ratio"]) if r.get("selected") is not None else (r["method"], None, None)
        groups.setdefault(key, []).append(r)
    out = []
    for (method, criterion, ratio), rs in groups.items():
        entry = {"method": method, "criterion": criterion, "ratio": ratio, "seeds": len(rs)}
        for name, fn in COLUMNS:
            vals = [fn(r) for r in rs if fn(r) is not None]
            entry[name] = None if not vals else {"mean": statistics.fmean(vals),
                                                 "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
        out.append(entry)
    return out


def _cell(stat) -> str:
    if stat is None:
        return "-"
    m, s = stat["mean"], stat["std"]
    digits = 2 if abs(m) < 100 else 0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown_table(results: dict) -> str:
    names = [n for n, _ in COLUMNS if any(e.get(n) is not None for e in results["summary"])]
    head = "| method | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (1 + len(names))]
    for e in results["summary"]:
        label = e["method"] if e["criterion"] is None else f"{e['method']} ({e['criterion']} {100 * e['ratio']:g}%)"
        lines.append(f"| {label} | " + " | ".join(_cell(e.get(n)) for n in names) + " |")
    seeds = results["seeds"]
    lines.append(f"\nmean ± std over seeds {', '.join(map(str, seeds))}; Avg. Gap in points (forget, retain and test "
                 "accuracy and the entropy MIA) against the retrained model of the same seed; RTE = seconds / "
                 "retraining seconds.")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path, ratio: Optional[float] = None) -> Optional[Path]:
    """Figure 4: forget and test accuracy on the validation split against the scale, one curve per method."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in results["rows"] if r["validation_sweep"] and "scale" in r["validation_sweep"][0]
            and "forget" in r["validation_sweep"][0] and "test" in r["validation_sweep"][0]]
    if not rows:
        return None
    ratio = ratio if ratio is not None else results["ratios"][min(1, len(results["ratios"]) - 1)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        if (row["ratio"] != ratio and row["criterion"] != "all") or row["seed"] != results["seeds"][0]:
            continue
        xs = [s["scale"] for s in row["validation_sweep"]]
        label = f"{row['method']} ({row['criterion']})"
        axes[0].plot(xs, [100 * s["forget"]["accuracy"] for s in row["validation_sweep"]], marker=".", label=label)
        axes[1].plot(xs, [100 * s["test"]["accuracy"] for s in row["validation_sweep"]], marker=".", label=label)
    for ax, name in zip(axes, ("forget (self) accuracy %", "accuracy on the other classes %")):
        ax.set_xscale("log")
        ax.set_xlabel("scale s (theta_J - s * delta)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"MR {100 * ratio:g}%: validation split (the split that chooses the scale)")
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
