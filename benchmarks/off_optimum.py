"""GIF on a user's model that is not at its optimum: a BatchNorm + residual net on a PNG ImageFolder.

Four MNIST digits (700 training and 200 test images a class) are written as a PNG ImageFolder; the
user's own BN + residual net (tests/userdata.py) is trained with plain PyTorch twice: stopped early
(SGD lr 0.2, 4 epochs, no schedule) and trained (lr 0.01, cosine, 10 epochs). Each is imported with
its own normalisation, then one class is removed with each variant given by ``--variants`` (a name
and gif options, ``name=--opt value ...``; ``defaults`` runs gif's defaults). Accuracy of the
forgotten class and of the other classes on the test images, Hessian-vector products and seconds.

    python benchmarks/off_optimum.py --json benchmarks/results/off_optimum.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch
from common import log

from typer.testing import CliRunner  # noqa: E402  (common.py put the repository on the path)

from gifcli.cli import app  # noqa: E402
from gifcli.io.files import provenance, write_json  # noqa: E402
from tests.userdata import digits, train_plain, write_image_folder, write_user_module  # noqa: E402

DIGITS, CLASSES, FORGET = [0, 3, 5, 8], ["d0", "d3", "d5", "d8"], 3  # forget the 8s
RECIPES = {"under-trained": {"epochs": 4, "lr": 0.2, "cosine": False},
           "trained": {"epochs": 10, "lr": 0.01, "cosine": True}}
VARIANTS = ("defaults=", "paper=--target forget --newton-steps 1", "remaining-1=--target remaining --newton-steps 1", "forget-3=--target forget --newton-steps 3")


def prepare(work: Path, data_dir) -> dict:
    module = write_user_module(work / "usermodels")
    arrays = digits(Path(data_dir) if data_dir else None, 700, 200, DIGITS)
    folder = work / "digits"
    if not (folder / "test" / CLASSES[-1]).is_dir():
        write_image_folder(folder, arrays, CLASSES)
    spec = importlib.util.spec_from_file_location("netdef", module)
    netdef = importlib.util.module_from_spec(spec)
    sys.modules["netdef"] = netdef
    spec.loader.exec_module(netdef)
    x, y = arrays["train"]
    models = {}
    for name, recipe in RECIPES.items():
        weights, out = work / f"{name}.pt", work / f"{name}.safetensors"
        if not out.exists():
            torch.manual_seed(0)
            model = train_plain(netdef.build_resbn(classes=4), (x.float().unsqueeze(1) / 255 - 0.5) / 0.5, y,
                                **recipe)
            torch.save(model.state_dict(), weights)
            invoke(["import", "--arch", f"{module}:build_resbn", "--arch-kwargs", '{"classes": 4}', "--weights",
                    weights, "--dataset", f"imagefolder:{folder}", "--mean", "0.5", "--std", "0.5", "--out", out,
                    "--device", "cpu"])
        models[name] = out
    return models


def invoke(args) -> str:
    r = CliRunner().invoke(app, [str(a) for a in args])
    if r.exit_code != 0:
        raise SystemExit(f"gif {' '.join(map(str, args))} failed:\n{r.output}")
    return r.output


def accuracies(report: dict) -> dict:
    b, e = report["base"], report["edited"]
    return {"forgotten_base": b["forget_test"]["accuracy"], "others_base": b["test"]["accuracy"],
            "forgotten": e["forget_test"]["accuracy"], "others": e["test"]["accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/gif_off_optimum")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--models", default=",".join(RECIPES))
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    models = prepare(work, args.data_dir)
    rows = []
    for name in args.models.split(","):
        for variant in args.variants:
            label, _, opts = variant.partition("=")
            run_dir = work / "runs" / f"{name}-{label}"
            shutil.rmtree(run_dir, ignore_errors=True)
            t = time.perf_counter()
            invoke(["remove-class", "--label", FORGET, "--model", models[name], "--out-dir", run_dir, "--device",
                    "cpu", *shlex.split(opts)])
            seconds = time.perf_counter() - t
            report = json.loads((run_dir / "report.json").read_text())
            row = {"model": name, "variant": label, "options": opts, **accuracies(report), "seconds": seconds,
                   "hyper": report.get("hyper"), "influence": report.get("influence", {}).get("stats")}
            rows.append(row)
            log(name, label, f"forgotten base {100 * row['forgotten_base']:.1f} ->", f" {100 * row['forgotten']:.1f} %", f"others {100 * row['others_base']:.1f}"
                f" -> {100 * row['others']:.1f} %", f"{seconds:.0f} s", row["hyper"])
    if args.json:
        write_json(args.json, {"rows": rows, "recipes": RECIPES, "digits": DIGITS, "forget": FORGET,
                               "provenance": provenance()})


if __name__ == "__main__":
    main()
