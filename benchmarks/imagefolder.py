"""A dataset larger than memory: MNIST as a 70 000-PNG ImageFolder against the built-in MNIST path.

Writes ``train/<digit>/<n>.png`` and ``test/<digit>/<n>.png`` for every MNIST image, imports the
shipped CNN onto it (the same weights and normalisation), then runs ``gif evaluate`` and
``gif remove-class --label 8`` on both datasets, one command at a time, and records each
command's wall time and peak resident memory (``ru_maxrss`` of the child process).

    python benchmarks/imagefolder.py --folder /tmp/mnist_png --json benchmarks/results/imagefolder.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import MODEL, ROOT, log

from gifcli.data.datasets import load_raw
from gifcli.io.files import provenance, write_json


def write_folder(root: Path, data_dir: str | None) -> None:
    from PIL import Image

    for split in ("train", "test"):
        raw = load_raw("mnist", split, data_dir, download=False)
        for k in range(10):
            (root / split / str(k)).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(raw.images[:, 0].numpy(), raw.labels.tolist())):
            Image.fromarray(img, mode="L").save(root / split / str(label) / f"{i:05d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", default="/tmp/mnist_png")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out-dir", default="/tmp/imagefolder_runs")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    folder, runs = Path(args.folder), Path(args.out_dir)
    runs.mkdir(parents=True, exist_ok=True)
    if not (folder / "test" / "9").is_dir():
        t = time.perf_counter()
        write_folder(folder, args.data_dir)
        log(f"wrote 70 000 PNGs in {time.perf_counter() - t:.0f} s")
    gif = [sys.executable, "-m", "gifcli"]
    dd = ["--data-dir", args.data_dir] if args.data_dir else []
    imported = runs / "mnist_cnn_png.safetensors"
    results = {"import": own_peak([*gif, "import", "--arch", "cnn", "--weights", str(MODEL), "--dataset",
                                f"imagefolder:{folder}", "--mean", "0.1307", "--std", "0.3081", "--out", str(imported),
                                "--device", "cpu", "--workers", str(args.workers)])}
    w = ["--workers", str(args.workers), "--device", "cpu"]
    # one child per measurement, so each peak is its own: ru_maxrss only ever grows, so each command
    # runs through a fresh interpreter that reports its own peak
    for name, cmd in (
        ("evaluate_builtin", [*gif, "evaluate", "--model", str(MODEL), "--forget-label", "8", *dd, *w]),
        ("evaluate_imagefolder", [*gif, "evaluate", "--model", str(imported), "--forget-label", "8", *w]),
        ("remove_class_builtin", [*gif, "remove-class", "--label", "8", "--model", str(MODEL), "--out-dir",
                                  str(runs / "builtin"), *dd, *w]),
        ("remove_class_imagefolder", [*gif, "remove-class", "--label", "8", "--model", str(imported), "--out-dir",
                                      str(runs / "png"), *w]),
    ):
        results[name] = own_peak(cmd)
        log(name, f"{results[name]['seconds']:.0f} s", f"{results[name]['peak_rss_mib']:.0f} MiB")
    for name in ("builtin", "png"):
        rep = json.loads((runs / name / "report.json").read_text())
        results[f"remove_class_{name}_metrics"] = {"forget_acc": rep["edited"]["forget"]["accuracy"],
                                                   "test_acc": rep["edited"]["test"]["accuracy"],
                                                   "scale": rep["scale"]}
    out = {"folder": str(folder), "files": 70000, "workers": args.workers, "results": results,
           "provenance": provenance()}
    print(json.dumps(out, indent=1))
    if args.json:
        write_json(args.json, out)


def own_peak(cmd: list[str]) -> dict:
    """Wall time and peak RSS of one command, measured in a wrapper process of its own."""
    wrapper = ("import resource, subprocess, sys, time, json; t = time.perf_counter(); "
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); s = time.perf_counter() - t; "
               "print(json.dumps({'rc': p.returncode, 'seconds': s, 'peak_kib': "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 'stderr': p.stderr[-2000:]}))")
    p = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    r = json.loads(p.stdout)
    if r["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r['stderr']}")
    return {"command": " ".join(cmd), "seconds": r["seconds"], "peak_rss_mib": r["peak_kib"] / 1024}


if __name__ == "__main__":
    main()
