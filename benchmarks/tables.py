"""Markdown tables for the docs, printed from the committed results files (nothing is typed in by hand).

    python benchmarks/tables.py solvers|mislabeled|random|imagefolder|distributed|scale|harness|harness_rte|harness_full|hvp|preconditioner|resnet18|resnet18_cost
    python benchmarks/tables.py harness converged/harness.json   # the harness tables of another results file
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def solvers() -> None:
    d = load("solvers.json")
    print("| system | solver | recurrences | HVPs to 1e-2 | HVPs to 1e-3 | best residual (≤ 120 iterations) | metrics at 1e-2 | metrics at 1e-3 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in d["rows"]:
        def m(tol):
            e = r["metrics"][tol]["edited"]
            if "forget" in e:
                s = f"{pct(e['forget']['accuracy'])} / {pct(e['test']['accuracy'])}"
            else:
                s = (f"{pct(e['bd_data_backdoor_label_accuracy'])} / {pct(e['bd_data_true_label_accuracy'])} / "
                     f"{pct(e['test_accuracy'])} / {pct(e['attack_success_rate'])}")
            return s + ("" if r["metrics"][tol]["converged"] else " (not converged)")
        rec = "float32" if r["recurrence"] == "model" else "float64"
        print(f"| {r['task']} | {r['solver']} | {rec} | {r['products_to_1e-2'] or 'not reached'} | "
              f"{r['products_to_1e-3'] or 'not reached'} | {r['best_residual']:.1e} | {m('0.01')} | {m('0.001')} |")


def mislabeled() -> None:
    d = load("mislabeled.json")["result"]
    print(f"{d['flipped']} of {d['of_class']} training images of class {d['source']} labelled {d['target']}.\n")
    print("| model | class test accuracy | overall test accuracy | gap closed | seconds |")
    print("|---|---|---|---|---|")
    for name, r in d["models"].items():
        closed = "-" if r.get("gap_closed") is None else f"{100 * r['gap_closed']:.0f} %"
        secs = d.get(f"{name}_seconds") or d.get({"flipped": "train_seconds_recorded",
                                                  "retrained": "retrain_seconds_recorded"}.get(name, ""))
        print(f"| {name} | {pct(r['class_test_accuracy'])} % | {pct(r['test_accuracy'])} % | {closed} | "
              f"{'-' if secs is None else f'{secs:.0f}'} |")


def random() -> None:
    d = load("random_forgetting.json")["result"]
    for tag, e in d.items():
        print(f"\nforget {100 * e['fraction']:g} % ({e['count']} images):\n")
        print("| model | forget acc | retain acc | test acc | MIA forget | MIA held-out | Avg. Gap | seconds |")
        print("|---|---|---|---|---|---|---|---|")
        for name, r in e["models"].items():
            secs = e.get(f"{name}_seconds") or (e.get("retrain_seconds_recorded", e.get("retrain_seconds"))
                                                if name == "retrained" else None)
            print(f"| {name} | {pct(r['forget_acc'])} | {pct(r['retain_acc'])} | {pct(r['test_acc'])} | "
                  f"{pct(r['mia_forget'])} | {pct(r['mia_held_out'])} | {100 * r['avg_gap']:.2f} | "
                  f"{'-' if secs is None else f'{secs:.0f}'} |")


def imagefolder() -> None:
    d = load("imagefolder.json")["results"]
    print("| command | built-in MNIST: seconds | peak RSS | 70 000-PNG ImageFolder: seconds | peak RSS |")
    print("|---|---|---|---|---|")
    for cmd in ("evaluate", "remove_class"):
        a, b = d[f"{cmd}_builtin"], d[f"{cmd}_imagefolder"]
        print(f"| gif {cmd.replace('_', '-')} | {a['seconds']:.0f} | {a['peak_rss_mib']:.0f} MiB | {b['seconds']:.0f} | "
              f"{b['peak_rss_mib']:.0f} MiB |")


def distributed() -> None:
    d = load("distributed_cpu.json")
    print("| run | seconds per H_JᵀH_J product | graphs kept per rank | peak RSS per process |")
    print("|---|---|---|---|")
    for name, r in d["runs"].items():
        print(f"| {name} | {r['product_seconds_median']:.2f} | {', '.join(f'{g:.0f}' for g in r['graph_mib_per_rank'])} MiB "
              f"| {', '.join(f'{p:.0f}' for p in r['peak_rss_mib_per_rank'])} MiB |")
    print(f"\nspeed-up of 2 processes: {d['speedup_vs_1_process_1_thread']:.2f}x against 1 process with 1 thread, "
          f"{d['speedup_vs_1_process_2_threads']:.2f}x against 1 process with 2 threads; graphs per rank "
          f"{d['graph_per_rank_vs_1_process']:.2f}x of one process's.\n\n`{d['auto_under_budget']}`")


def scale() -> None:
    d = load("scale_estimate.json")
    a = d["assumptions"]
    print(f"Measured: {d['flops_per_image_per_product'] / 1e9:.2f} GFLOP per image per product "
          f"({d['parameters']:,} parameters, {d['selected']:,} in J); all-reduce of {d['allreduce_bytes_per_hvp'] / 2**20:.0f} MiB "
          f"per HVP, two per product. Assumed: {a['gpu_tflops']:g} TFLOP/s per GPU, {a['nvlink_gbps']:g} GB/s within a node, "
          f"{a['network_gbps']:g} GB/s across nodes, {a['latency_ms']:g} ms per step.\n")
    print("| GPUs | compute s | all-reduce s | s per product | communication share |")
    print("|---|---|---|---|---|")
    for r in d["rows"]:
        print(f"| {r['gpus']} | {r['compute_seconds']:.3f} | {r['allreduce_seconds']:.3f} | {r['seconds_per_product']:.3f} | "
              f"{100 * r['communication_share']:.0f} % |")
    print(f"\nAll-reducing costs as much as computing from about {d['gpus_where_communication_equals_compute']:,} GPUs "
          f"(a {a['images']:,}-image sample; the ring's latency grows with the GPU count while each GPU's "
          f"compute shrinks, so the point moves about as the square root of the sample size).")


def _methods(d: dict, skip: tuple) -> list:
    """Every method of any setting, in first-seen order."""
    out: list = []
    for r in d.values():
        out += [e["method"] for e in r["summary"] if e["method"] not in skip and e["method"] not in out]
    return out


def harness(name: str = "harness.json") -> None:
    """Avg. Gap to retraining per method and setting (mean ± std over seeds); the best edit in bold."""
    d = load(name)["settings"]
    methods = _methods(d, ("retrain",))
    gaps = {name: {e["method"]: e["Avg. Gap"] for e in r["summary"]} for name, r in d.items()}
    counts = {name: {e["method"]: e.get("seeds") for e in r["summary"]} for name, r in d.items()}
    best = {name: min((m for m in methods if m != "unedited" and g.get(m)), key=lambda m: g[m]["mean"])
            for name, g in gaps.items()}
    print("| method | " + " | ".join(d) + " |")
    print("|---|" + "---|" * len(d))
    for m in methods:
        cells = []
        for name in d:
            g = gaps[name].get(m)
            cell = "-" if g is None else f"{g['mean']:.2f} ± {g['std']:.2f}"
            n, most = counts[name].get(m), max(v or 0 for v in counts[name].values())
            if g is not None and most == 1:
                cell = f"{g['mean']:.2f}"  # one seed: no spread to show
            elif g is not None and n is not None and n < most:
                cell = f"{g['mean']:.2f} ({n} seed{'s' if n > 1 else ''})"
            cells.append(f"**{cell}**" if m == best[name] else cell)
        print(f"| {m} | " + " | ".join(cells) + " |")


def harness_rte(name: str = "harness.json") -> None:
    """Seconds (search included) as a share of retraining, per method and setting."""
    d = load(name)["settings"]
    methods = _methods(d, ("retrain", "unedited"))
    print("| method | " + " | ".join(d) + " |")
    print("|---|" + "---|" * len(d))
    for m in methods:
        cells = []
        for name, r in d.items():
            e = next((x for x in r["summary"] if x["method"] == m), None)
            cells.append("-" if e is None or e["RTE"] is None else f"{e['RTE']['mean']:.2f}")
        print(f"| {m} | " + " | ".join(cells) + " |")
    retrain = [f"{name} {next(x for x in r['summary'] if x['method'] == 'retrain')['seconds']['mean']:.0f} s"
               for name, r in d.items()]
    print("\nretraining: " + ", ".join(retrain))


def harness_full(name: str = "harness.md") -> None:
    """Every column of every setting (the grid's markdown)."""
    print((RESULTS / name).read_text())


def preconditioner() -> None:
    rows = []
    for name in ("preconditioner_cnn.json", "preconditioner_resnet18.json"):
        if (RESULTS / name).exists():
            rows += load(name)["rows"]
    print("| model (parameters, \\|J\\|) | solve | products | + factors (in products) | unpreconditioned residual | "
          "plain LSMR's products to it | error vs reference | plain LSMR's error at equal products |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        head = f"{r['model']} ({r['parameters'] / 1e6:.2f} M, {r['J']:,})"
        p = r["plain"]
        print(f"| {head} | plain LSMR, reference | {p['products']} | - | {p['final_residual']:.1e} | - | 0 | - |")
        for e in r["kfac"]:
            same = e["plain_at_same_products"]
            print(f"| {head} | K-FAC, damping {e['damping']:g}, tol {e['tol']:g} | {e['products']} | "
                  f"{e['preconditioner_products_equivalent']:.1f} | {e['unpreconditioned_residual']:.1e} | "
                  f"{e['plain_products_to_same'] or 'not reached'} | {e['error']:.2f} | {same['error']:.2f} |")


def hvp() -> None:
    d = load("hvp_ratio_cpu.json")
    for k, v in d["ratios_to_gradient"].items():
        print(f"| {k} | {d['seconds'][k]:.3f} | {v:.2f} |")
    print(json.dumps(d.get("solver_products", {}), indent=1)[:600])


def resnet18(name: str = "resnet18_table1.json") -> None:
    """Table 1 on ResNet-18: ours (self-loss / test loss, self / test accuracy) beside the paper's, in italics."""
    d = load(name)
    cells, paper = d.get("table1", {}), d["paper"]
    ratios = (0.05, 0.1, 0.3, 0.5)
    print("| criterion | | " + " | ".join(f"MR {100 * r:g} %" for r in ratios) + " |")
    print("|---|---|" + "---|" * len(ratios))
    for c, p in paper.items():
        row = [cells.get(f"{c}-{r:g}") for r in ratios]
        f = lambda k, fmt: [("-" if x is None else fmt(x[k])) for x in row]  # noqa: E731
        print(f"| {c} | self-loss ↑ | " + " | ".join(f("self_loss", lambda v: f"{v:.2f}")) + " |")
        print(f"| | *paper* | " + " | ".join(f"*{v:.2f}*" for v in p["self"]) + " |")
        print(f"| | test loss ↓ | " + " | ".join(f("test_loss", lambda v: f"{v:.3f}")) + " |")
        print(f"| | *paper* | " + " | ".join(f"*{v:.2f}*" for v in p["test"]) + " |")
        print(f"| | self / test acc % | " + " | ".join(
            "-" if x is None else f"{pct(x['self_accuracy'])} / {pct(x['test_accuracy'])}" for x in row) + " |")
        print(f"| | scale, products | " + " | ".join(
            "-" if x is None else f"{x['scale']:.3g}, {x['hvp_products']}" for x in row) + " |")
    rr = (d.get("retrained_row") or {}).get("report")
    if rr:
        print(f"| retrained without 8 | self-loss / test loss | {rr['forget']['loss']:.2f} / {rr['test']['loss']:.3f} "
              f"| self / test acc % | {pct(rr['forget']['accuracy'])} / {pct(rr['test']['accuracy'])} | |")


def resnet18_cost(name: str = "resnet18_table1.json") -> None:
    """What GIF costs on ResNet-18: training, products, memory, remove-class against training."""
    d = load(name)
    t, c, rm = d["train"], d["cost"], d["remove_default"]
    epochs = len(t["history"])
    print("| quantity | value |")
    print("|---|---|")
    print(f"| training, {epochs} epochs (s; s per epoch) | {t['train_seconds']:.0f}; {t['train_seconds'] / epochs:.0f} |")
    for mode in ("retain", "recompute"):
        m = c[mode]
        print(f"| {mode}: gradient over the {m['hessian_samples']}-image Hessian sample (s) | {m['gradient_seconds']:.2f} |")
        print(f"| {mode}: one H_J^T H_J product, eq. 13 (s; ratio to the gradient) | "
              f"{m['product_seconds']:.2f}; {m['product_to_gradient']:.2f} |")
        print(f"| {mode}: peak resident memory of the measuring process (MiB) | {m['peak_rss_mib']:.0f} |")
    print(f"| gradient over the {c['retain']['forget_size']} training images of 8 (s) | "
          f"{c['retain']['forget_gradient_seconds']:.1f} |")
    print(f"| `gif remove-class --label 8`, defaults: wall seconds; products; HVP mode; peak memory (MiB) | "
          f"{rm['wall_seconds']:.0f}; {rm['hvp_products']}; {rm['hvp_mode']}; {rm['peak_rss_mib']:.0f} |")
    print(f"| remove-class / training time | {rm['wall_seconds'] / t['train_seconds']:.2f} |")


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
