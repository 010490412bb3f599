"""gif compare: methods x criteria x ratios, each select -> influence -> scale on validation ->
apply -> evaluate, reusing remove-class's steps; plus the first-order `grad` baseline."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..errors import UsageError
from ..io.artifacts import write_influence
from ..io.files import make_folder, provenance, save_figure, write_json
from ..math.influence import METHODS, SolverOptions
from ..math.params import IndexSet
from .audit import against_baseline, mia_share
from .steps import Loaded, check_label, influence_step, load_data, load_model, scale_and_apply, select_step
from .unlearn import (forget_metrics, label_target, parse_scales, space_of,
                      target_gradient)

COMPARE_METHODS = METHODS + ("grad",)


def _grad_influence(loaded: Loaded, J: IndexSet, target, train, out: Path) -> dict:
    """First-order baseline: delta = -g_J, so apply's theta_J - s*delta ascends the forget loss."""
    start = time.perf_counter()
    g = target_gradient(loaded.model, target, len(train), torch.device("cpu"))
    meta = {"model_sha256": loaded.sha, "method": "grad", "solver": "none", "selected": J.size,
            "stats": {"iterations": 0, "hvp_products": 0}, "target": target.describe,
            "seconds": time.perf_counter() - start, "provenance": provenance(kind="compare grad")}
    write_influence(out, -J.gather(g), J, meta)
    return meta


def compare(model_path: str | Path, label: int, retrained_path: Optional[str | Path], methods: Sequence[str],
            criteria: Sequence[str], ratios: Sequence[float], scale: str, options: SolverOptions,
            hessian_samples: int, seed: int, out_dir: Path, device: torch.device, data_dir: Optional[str],
            progress: Optional[Callable[[int, int, str], None]] = None) -> dict:
    for m in methods:
        if m not in COMPARE_METHODS:
            raise UsageError(f"unknown method {m!r}; choose from {', '.join(COMPARE_METHODS)}")
    for r in ratios:
        if not 0.0 < r <= 1.0:
            raise UsageError(f"ratio must be in (0, 1], got {r}")
    scales = parse_scales(scale)
    loaded = load_model(model_path)
    check_label(loaded, label)
    splits = load_data(loaded, data_dir)
    retrained = load_model(retrained_path) if retrained_path else None
    for sub in ("masks", "influence", "models"):
        make_folder(out_dir / sub)
    target = label_target(splits.train, label, splits.num_classes, splits.dataset)
    cells = [(c, r, m) for c in criteria for r in ratios for m in methods if m != "if"]
    if "if" in methods:
        cells.append(("all", 1.0, "if"))
    rows = []
    for i, (criterion, ratio, method) in enumerate(cells):
        if progress:
            progress(i, len(cells), f"{method} {criterion} {ratio:g}")
        start = time.perf_counter()
        tag = f"{criterion}-{ratio:g}"
        mask = out_dir / "masks" / f"{tag}.json"
        if method != "if" and not mask.exists():
            select_step(loaded, target, criterion, ratio, seed, None, len(splits.train), mask)
        infl = out_dir / "influence" / f"{method}-{tag}.safetensors"
        if method == "grad":
            from ..io.artifacts import read_mask

            J, _ = read_mask(mask, space_of(loaded.model), loaded.sha)
            imeta = _grad_influence(loaded, J, target, splits.train, infl)
        else:
            imeta = influence_step(loaded, None if method == "if" else mask, target, splits.train, method, options,
                                   hessian_samples, seed, device, infl)
        edited_path = out_dir / "models" / f"{method}-{tag}.safetensors"
        chosen, sweep = scale_and_apply(loaded, infl, scales, lambda m: forget_metrics(m, splits.validation, label),
                                        edited_path, score_single=True)
        edited = load_model(edited_path)
        row = {"method": method, "criterion": criterion, "ratio": ratio, "selected": imeta["selected"], "scale": chosen,
               "influence_seconds": imeta["seconds"], "seconds": time.perf_counter() - start,
               "solver_stats": {k: imeta["stats"].get(k) for k in ("iterations", "hvp_products",
                                                                   "final_relative_residual", "converged")},
               **forget_metrics(edited.model, splits.test, label),
               "mia_forget_member_share": mia_share(edited.model, splits, label),
               "validation_sweep": sweep}
        if retrained is not None:
            row["against_retrained"] = against_baseline(edited.model, edited.meta, retrained.model, retrained.meta,
                                                        splits, None)
        rows.append(row)
    if progress:
        progress(len(cells), len(cells), "done")
    reference = {"base": {**forget_metrics(loaded.model, splits.test, label),
                          "mia_forget_member_share": mia_share(loaded.model, splits, label)}}
    if retrained is not None:
        reference["retrained"] = {**forget_metrics(retrained.model, splits.test, label),
                                  "mia_forget_member_share": mia_share(retrained.model, splits, label),
                                  "train_seconds": retrained.meta.get("train_seconds"),
                                  "excluded_label": retrained.meta.get("excluded_label")}
    results = {"format": "gif-compare", "version": 1, "model": str(model_path), "label": label,
               "retrained": str(retrained_path) if retrained_path else None, "methods": list(methods),
               "criteria": list(criteria), "ratios": list(ratios), "solver": options.solver,
               "hessian_samples": hessian_samples, "reference": reference, "rows": rows,
               "provenance": provenance(kind="compare")}
    write_json(out_dir / "results.json", results)
    (out_dir / "results.md").write_text(markdown_table(results))
    return results


def markdown_table(results: dict) -> str:
    """Rows per method/criterion, columns per ratio, as in the paper's Tables 1 and 2."""
    ratios = results["ratios"]
    head = "| method | criterion | metric | " + " | ".join(f"MR {100 * r:g}%" for r in ratios) + " |"
    lines = [head, "|" + "---|" * (3 + len(ratios))]
    metrics = [("test acc %", lambda r: f"{100 * r['test']['accuracy']:.2f}"),
               ("test loss", lambda r: f"{r['test']['loss']:.3f}"),
               ("self acc %", lambda r: f"{100 * r['forget']['accuracy']:.2f}"),
               ("self loss", lambda r: f"{r['forget']['loss']:.2f}"),
               ("F1", lambda r: f"{r['f1']:.3f}"),
               ("MIA %", lambda r: f"{100 * r['mia_forget_member_share']:.1f}"),
               ("scale", lambda r: f"{r['scale']:g}"),
               ("seconds", lambda r: f"{r['influence_seconds']:.0f}")]
    keys = sorted({(r["method"], r["criterion"]) for r in results["rows"]}, key=lambda k: (results["methods"].index(k[0]), k[1]))
    for method, criterion in keys:
        by_ratio = {r["ratio"]: r for r in results["rows"] if r["method"] == method and r["criterion"] == criterion}
        for name, fn in metrics:
            cells = [fn(by_ratio[x]) if x in by_ratio else "-" for x in ratios]
            lines.append(f"| {method} | {criterion} | {name} | " + " | ".join(cells) + " |")
    for name, ref in results["reference"].items():
        lines.append(f"| {name} | - | test acc % / self acc % / F1 / MIA % | "
                     f"{100 * ref['test']['accuracy']:.2f} / {100 * ref['forget']['accuracy']:.2f} / {ref['f1']:.3f} / "
                     f"{100 * ref['mia_forget_member_share']:.1f}" + " |" * len(ratios))
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path, ratio: Optional[float] = None) -> Optional[Path]:
    """Figure 4: forget and test accuracy on the validation split against the scale, one curve per method."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ratio = ratio if ratio is not None else results["ratios"][min(1, len(results["ratios"]) - 1)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in results["rows"]:
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
    fig.suptitle(f"label {results['label']}, MR {100 * ratio:g}%: validation split (the split that chooses the scale)")
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
