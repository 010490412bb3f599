"""Deletion requests in sequence through a ledger, against retraining at the same points.

Two scenarios on the shipped CNN's recipe (configs/mnist_cnn.yaml, 20 epochs):

* ``random``: ``--requests`` requests of ``--size`` random training samples each (disjoint, seed 0),
  forgotten one after another by GIF's default (privacy criterion) from checkpoints/mnist_cnn.safetensors;
* ``mislabeled``: the harness's mislabeled setting (45 % of class 3 flipped to 8, seed 0): its base model
  trained on the flipped labels, the flipped images found in ``--requests`` parts, each forgotten with
  the repair criterion.

After the requests named by ``--retrain-at`` a model is retrained without everything forgotten so far
(the recipe, seed as the base), and the ledger's head is compared with it (Avg. Gap over forget,
retain, test accuracy and the entropy MIA; agreement and KL on the forgotten samples), beside the
one-shot edit of the union of the requests from the base model. Every row records the request's
seconds, the ledger's diagnostics and its budget used. Resumable: the ledger and the retrained models
stay in ``--work``.

    python benchmarks/ledger_sequence.py --scenario random --work STORE --json benchmarks/results/ledger_random.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import flipped_mnist  # noqa: E402

from gifcli.config import TrainConfig  # noqa: E402
from gifcli.core.args import UnlearnArgs  # noqa: E402
from gifcli.core.checkpoints import edited_meta, load_model  # noqa: E402
from gifcli.core.metrics import agreement, avg_gap, mean_kl, unlearning_metrics  # noqa: E402
from gifcli.core.run import run  # noqa: E402
from gifcli.core.tasks import SampleRemoval  # noqa: E402
from gifcli.data.forget import ForgetSet, resolve  # noqa: E402
from gifcli.io.checkpoint import save_checkpoint  # noqa: E402
from gifcli.io.files import provenance, write_json  # noqa: E402
from gifcli.models.specs import set_eval  # noqa: E402
from gifcli.models.train import train_model  # noqa: E402
from gifcli.pipelines.evaluate import GAP_KEYS  # noqa: E402
from gifcli.pipelines.inputs import load_data_for, runtime  # noqa: E402
from gifcli.pipelines.ledger import Ledger  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def retrained_without(base, data_full, gone: list[int], work: Path, tag: str, rt) -> tuple:
    """The recipe trained on the training split without ``gone`` (cached in ``work``); its seconds."""
    path = work / f"retrained-{tag}.safetensors"
    if path.exists():
        loaded = load_model(path)
        return loaded, loaded.meta["edit"]["args"]["seconds"]
    cfg = TrainConfig.from_dict(base.meta["train_config"])
    fit = data_full.fit.where(~torch.isin(data_full.fit.indices, torch.tensor(gone, dtype=torch.long)))
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        fresh = base.context().build().to(rt.device)
        train_model(fresh, fit, cfg, rt.device, None, rt.workers)
    seconds = time.perf_counter() - start
    save_checkpoint(path, set_eval(fresh).cpu(), edited_meta(base, {}, {"epochs": cfg.epochs}, "retrain",
                                                             {"forgotten": len(gone), "seconds": seconds}))
    return load_model(path), seconds


def compare(model, reference, data, union: list[int], rt) -> dict:
    task = SampleRemoval(resolve(ForgetSet(torch.tensor(sorted(union)), source="union"), data))
    mine = unlearning_metrics(model, data, task, rt)
    ref = unlearning_metrics(reference, data, task, rt)
    forget = task.target(data).split
    return {"avg_gap": avg_gap(mine, ref, GAP_KEYS), "agreement_forget": agreement(model, reference, forget, rt),
            "kl_forget": mean_kl(reference, model, forget, rt), "forget_accuracy": mine["forget"]["accuracy"],
            "retrained_forget_accuracy": ref["forget"]["accuracy"], "test_accuracy": mine["test"]["accuracy"],
            "retrained_test_accuracy": ref["test"]["accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", choices=("random", "mislabeled"), required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--requests", type=int, default=None, help="random: 10; mislabeled: 5")
    ap.add_argument("--size", type=int, default=100, help="random: samples per request")
    ap.add_argument("--retrain-at", default=None, help="comma-separated request numbers (default: every request)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    work = Path(a.work) / a.scenario
    work.mkdir(parents=True, exist_ok=True)
    rt = runtime("cpu")
    if a.scenario == "random":
        base_path, criterion, n = ROOT / "checkpoints/mnist_cnn.safetensors", "privacy", a.requests or 10
        base = load_model(base_path)
        data = load_data_for(base, None, a.data_dir)
        perm = data.fit_indices[torch.randperm(len(data.fit_indices), generator=torch.Generator().manual_seed(0))]
        requests = [perm[a.size * k:a.size * (k + 1)].sort().values for k in range(n)]
    else:
        n = a.requests or 5
        tensors = work / "mnist_flipped_s0.safetensors"
        flipped, _ = flipped_mnist(tensors, 3, 8, 0.45, 0, a.data_dir)
        base_path, criterion = work / "base.safetensors", "repair"
        if not base_path.exists():
            raise SystemExit(f"put the mislabeled setting's 20-epoch base model (trained on {tensors}) at {base_path}")
        base = load_model(base_path)
        data = load_data_for(base, f"tensors:{tensors}", a.data_dir)
        # every flipped image, those in gif's validation split too: a request's validation images are left
        # out of the validation that scores its edit (and of every later edit's); images not yet found still
        # sit there with their wrong labels, as they would for a user who finds them in parts
        order = flipped[torch.randperm(len(flipped), generator=torch.Generator().manual_seed(0))]
        requests = [part.sort().values for part in torch.tensor_split(order, n)]
    at = set(range(1, n + 1)) if a.retrain_at is None else {int(x) for x in a.retrain_at.split(",") if x.strip()}
    path = work / "requests.ledger"
    lg = Ledger(path) if path.exists() else Ledger.create(path, base_path)
    args = UnlearnArgs("gif", scale_criterion=criterion)
    rows = []
    out = {"scenario": a.scenario, "base": str(base_path), "requests": n, "retrain_at": sorted(at), "rows": rows,
           "provenance": provenance(kind="benchmark")}
    for k, idx in enumerate(requests, 1):
        request = f"{a.scenario}-{k}"
        done = {e.request: e for e in lg.events()}
        event = done.get(request) or lg.forget(ForgetSet(idx, source=request), request, args, rt, a.data_dir)
        union = sorted(lg.forgotten())
        row = {"request": k, "samples": len(idx), "forgotten": len(union), "seconds": event.body["seconds"],
               "budget_used": event.body["diagnostics"]["budget_used"], "diagnostics": event.body["diagnostics"],
               "hyper": event.body["hyper"]}
        if k in at:
            reference, seconds = retrained_without(base, data, union, work, f"{k}", rt)
            head = lg.load(lg.head())
            row["retrain_seconds"] = seconds
            row["head"] = compare(head.model, reference.model, data, union, rt)
            task = SampleRemoval(resolve(ForgetSet(torch.tensor(union), source="union"), data), criterion)
            t = time.perf_counter()
            one = run(task, base.model, data, args, rt, base.context(), report=False)
            row["one_shot_seconds"] = time.perf_counter() - t
            row["one_shot"] = compare(one.model, reference.model, data, union, rt)
            print(f"request {k}: head gap {100 * row['head']['avg_gap']:.2f}, agreement "
                  f"{100 * row['head']['agreement_forget']:.1f} %; one-shot gap {100 * row['one_shot']['avg_gap']:.2f}; "
                  f"budget used {row['budget_used']:.2f}; {row['seconds']:.1f} s vs retraining {seconds:.0f} s",
                  flush=True)
        rows.append(row)
        write_json(a.json, out)


if __name__ == "__main__":
    main()
