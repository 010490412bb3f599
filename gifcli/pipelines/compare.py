"""gif compare: methods x criteria x ratios on one forget request, each cell one run of the core.

Every cell writes its own folder (``cells/<method>-<criterion>-<ratio>/``: mask, influence,
edited model, report), so nothing is reused between cells or between runs: a second compare
into the same folder with other arguments recomputes everything it reports. ``results.json``
holds every row with its validation sweep, ``results.md`` a table shaped like the paper's
Tables 1-2, ``results.png`` (with the plot extra) Figure 4.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..core.args import Runtime, UnlearnArgs
from ..core.methods import METHODS
from ..core.tasks import Task
from ..data.datasets import Data
from ..errors import UsageError
from ..io.files import make_folder, provenance, save_figure, write_json, write_text
from .common import Loaded
from .evaluate import against, model_metrics
from .unlearn import unlearn_to_folder


def compare(loaded: Loaded, data: Data, task: Task, methods: Sequence[str], criteria: Sequence[str],
            ratios: Sequence[float], base_args: UnlearnArgs, rt: Runtime, out_dir: Path,
            retrained: Optional[Loaded] = None) -> dict:
    for m in methods:
        METHODS.get(m)
    cells: list[UnlearnArgs] = []
    for criterion in criteria:
        for ratio in ratios:
            for m in methods:
                if m != "if":
                    cells.append(base_args.replace(method=m, criterion=criterion, ratio=ratio))
    if "if" in methods:
        cells.append(base_args.replace(method="if", criterion="all", ratio=1.0))
    if not cells:
        raise UsageError("nothing to compare")
    make_folder(out_dir)
    rows = []
    for i, args in enumerate(cells):
        tag = f"{args.method}-{args.criterion}-{args.ratio:g}"
        rt.report("compare", i, len(cells), tag)
        result, report = unlearn_to_folder(loaded, data, task, args, rt, out_dir / "cells" / tag, kind="compare-cell")
        metrics = model_metrics(result.model, data, task, rt)
        row = {"method": args.method, "criterion": args.criterion, "ratio": args.ratio,
               "selected": result.outcome.influence.J.size if result.outcome.influence else None,
               **result.outcome.hyper, "method_seconds": result.outcome.seconds,
               "influence_seconds": result.outcome.influence.seconds if result.outcome.influence else None,
               "solver_stats": {k: (report.get("influence") or {}).get("stats", {}).get(k)
                                for k in ("iterations", "hvp_products", "final_relative_residual", "converged")},
               **metrics, "validation_sweep": result.outcome.search}
        if retrained is not None:
            row["against_retrained"] = against(result.model, metrics, retrained,
                                               model_metrics(retrained.model, data, task, rt), data, task, rt, True)
        rows.append(row)
    rt.report("compare", len(cells), len(cells), "done")
    reference = {"base": model_metrics(loaded.model, data, task, rt)}
    if retrained is not None:
        reference["retrained"] = {**model_metrics(retrained.model, data, task, rt),
                                  "train_seconds": retrained.meta.get("train_seconds"),
                                  "excluded_label": retrained.meta.get("excluded_label")}
    results = {"format": "gif-compare", "version": 1, "model": loaded.path, "model_sha256": loaded.sha,
               "task": task.describe(), "label": task.describe().get("label"),
               "retrained": retrained.path if retrained else None, "methods": list(methods),
               "criteria": list(criteria), "ratios": list(ratios), "args": base_args.as_dict(),
               "reference": reference, "rows": rows, "provenance": provenance(kind="compare")}
    if rt.dist.is_main:
        write_json(out_dir / "results.json", results)
        write_text(out_dir / "results.md", markdown_table(results))
    return results


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def markdown_table(results: dict) -> str:
    """Rows per method/criterion, columns per ratio, as in the paper's Tables 1 and 2."""
    ratios = results["ratios"]
    head = "| method | criterion | metric | " + " | ".join(f"MR {100 * r:g}%" for r in ratios) + " |"
    lines = [head, "|" + "---|" * (3 + len(ratios))]
    metrics = [("test acc %", lambda r: _pct(r["test"]["accuracy"])),
               ("test loss", lambda r: f"{r['test']['loss']:.3f}"),
               ("self acc %", lambda r: _pct(r["forget"]["accuracy"])),
               ("self loss", lambda r: f"{r['forget']['loss']:.2f}"),
               ("F1", lambda r: f"{r['f1']:.3f}" if "f1" in r else "-"),
               ("MIA %", lambda r: _pct((r.get("mia") or {}).get("forget"))),
               ("scale", lambda r: f"{r['scale']:g}" if r.get("scale") is not None else "-"),
               ("seconds", lambda r: f"{r['method_seconds']:.0f}")]
    keys = sorted({(r["method"], r["criterion"]) for r in results["rows"]},
                  key=lambda k: (results["methods"].index(k[0]), k[1]))
    for method, criterion in keys:
        by_ratio = {r["ratio"]: r for r in results["rows"] if r["method"] == method and r["criterion"] == criterion}
        for name, fn in metrics:
            cells = [fn(by_ratio[x]) if x in by_ratio else "-" for x in ratios]
            lines.append(f"| {method} | {criterion} | {name} | " + " | ".join(cells) + " |")
    for name, ref in results["reference"].items():
        lines.append(f"| {name} | - | test acc % / self acc % / F1 / MIA % | "
                     f"{_pct(ref['test']['accuracy'])} / {_pct(ref['forget']['accuracy'])} / "
                     f"{ref.get('f1', float('nan')):.3f} / {_pct((ref.get('mia') or {}).get('forget'))}"
                     + " |" * len(ratios))
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path, ratio: Optional[float] = None) -> Optional[Path]:
    """Figure 4: forget and test accuracy on the validation split against the scale, one curve per method."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in results["rows"] if r["validation_sweep"] and "forget" in r["validation_sweep"][0]
            and "test" in r["validation_sweep"][0]]
    if not rows:
        return None
    ratio = ratio if ratio is not None else results["ratios"][min(1, len(results["ratios"]) - 1)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        if row["ratio"] != ratio and row["method"] != "if":
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
    fig.suptitle(f"label {results.get('label')}, MR {100 * ratio:g}%: validation split (the split that chooses the scale)")
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
