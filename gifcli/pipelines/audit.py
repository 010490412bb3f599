"""gif audit: the unlearning challenge's forgetting score for one method, on the user's recipe and data.

N models are trained with the recipe (seeds s = first..first+N-1) and each is unlearned by the
method; N models are trained without the forget set (seeds 10 000 + s: independent of the
originals). Every forget example's logit-scaled confidence under the 2N models gives its
epsilon, and the forget score F (``gifcli.math.forgetting``); the final score is
``F x (RA / RA_retrained) x (TA / TA_retrained)`` with RA the accuracy on retained training data
(a fixed sample) and TA on the test data, each the mean over the N models of a side.

The model store (``--store``) keeps every trained, retrained and unlearned model under a key of
what made it (recipe, data fingerprint, forget-set sha256, seed, and for an unlearned model the
method's recorded arguments): a second method reuses the N originals and the N retrained models,
and a killed audit continues where it stopped (every model is written atomically). Trainings run
in ``jobs`` processes at once.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from ..config import TrainConfig
from ..core.args import Runtime, UnlearnArgs
from ..core.checkpoints import load_model, save_edited
from ..core.metrics import RETAIN_SAMPLE
from ..core.passes import evaluate, outputs
from ..core.run import run
from ..core.tasks import SampleRemoval
from ..data.datasets import Data, load_data
from ..data.forget import ForgetSet, resolve, write_forget
from ..errors import GifError, UsageError
from ..io.files import json_sha256, make_folder, provenance, sha256_file, write_json
from ..math.forgetting import DELTA, forget_score, logit_scaled_confidence
from .train import run_train

RETRAINED_SEED_OFFSET = 10_000  # retrained models are independent runs, not the originals' twins

Progress = Optional[Callable[[str, int, int, str], None]]


@dataclass(frozen=True)
class AuditPlan:
    recipe: TrainConfig
    forget: ForgetSet
    args: UnlearnArgs
    models: int = 8
    first_seed: int = 0
    criterion: str = "privacy"

    def __post_init__(self) -> None:
        if self.models < 3:
            raise UsageError(f"--models must be at least 3 (the score compares two samples of N), got {self.models}")


def _key(parts: dict) -> str:
    return json_sha256(parts)[:20]


class Store:
    """Models on disk under keys of what made them (``<role>-<key>.safetensors`` + a JSON of the key)."""

    def __init__(self, root: Path, plan: AuditPlan, data: Data) -> None:
        self.root = make_folder(Path(root) / "models")
        self.base = {"recipe": plan.recipe.as_dict(), "data": data.record(), "forget_sha256": plan.forget.sha256}

    def path(self, role: str, seed: int, extra: Optional[dict] = None) -> Path:
        parts = {**self.base, "role": role, "seed": seed, **({"method": extra} if extra else {})}
        path = self.root / f"{role}-s{seed}-{_key(parts)}.safetensors"
        sidecar = path.with_suffix(".json")
        if not sidecar.exists():
            write_json(sidecar, parts)
        return path

    def check(self, path: Path, made_now: bool) -> None:
        """A model made now has its bytes' sha256 recorded in its sidecar; one reused from the store is
        checked against it (recorded now for a store made before this check). A mismatch is refused by
        name: an audit is never scored on a model other than the one it names."""
        sidecar = path.with_suffix(".json")
        record = json.loads(sidecar.read_text())
        actual = sha256_file(path)
        recorded = record.get("file_sha256")
        if made_now or recorded is None:
            write_json(sidecar, {**record, "file_sha256": actual})
        elif recorded != actual:
            raise GifError(f"{path} in the audit store is not the model recorded there (sha256 {actual[:12]} != "
                           f"{recorded[:12]}): delete it and its .json to have it made again")


def _train_job(cfg: dict, out: str, data_dir: Optional[str], exclude_path: Optional[str], threads: int) -> float:
    """One training in a worker process (top level: picklable)."""
    torch.set_num_threads(max(threads, 1))
    from ..data.forget import read_forget

    start = time.perf_counter()
    run_train(TrainConfig.from_dict(cfg), out, Runtime(), data_dir, None,
              read_forget(exclude_path) if exclude_path else None)
    return time.perf_counter() - start


def train_missing(jobs_list: list[tuple[dict, Path, Optional[str]]], data_dir: Optional[str], jobs: int,
                  progress: Progress) -> int:
    """Train every (recipe, path, exclude file) whose path is not in the store yet; returns how many."""
    todo = [j for j in jobs_list if not j[1].exists()]
    if not todo:
        return 0
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    if jobs <= 1:
        for i, (cfg, path, exclude) in enumerate(todo):
            if progress:
                progress("train", i, len(todo), path.name)
            _train_job(cfg, str(path), data_dir, exclude, torch.get_num_threads())
    else:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_train_job, cfg, str(path), data_dir, exclude, threads)
                       for cfg, path, exclude in todo]
            for i, f in enumerate(futures):
                f.result()
                if progress:
                    progress("train", i + 1, len(todo), todo[i][1].name)
    if progress:
        progress("train", len(todo), len(todo), "done")
    return len(todo)


def _side_metrics(paths: list[Path], data: Data, forget_split, retain, rt: Runtime) -> dict:
    confs, ra, ta = [], [], []
    for p in paths:
        model = load_model(p).model.to(rt.device).eval()
        confs.append(logit_scaled_confidence(outputs(model, forget_split, rt), forget_split.labels))
        ra.append(evaluate(model, retain, rt, "retained").accuracy)
        ta.append(evaluate(model, data.test_split, rt, "test").accuracy)
    return {"confidences": torch.stack(confs), "retain_accuracy": sum(ra) / len(ra), "test_accuracy": sum(ta) / len(ta),
            "retain_accuracies": ra, "test_accuracies": ta}


def audit(plan: AuditPlan, store_root: Path, rt: Runtime, data_dir: Optional[str] = None, jobs: int = 1,
          progress: Progress = None) -> dict:
    """Train what the store lacks, unlearn, score; returns the audit's record (see the module docstring)."""
    start = time.perf_counter()
    data = load_data(plan.recipe.dataset_spec(), data_dir)
    resolved = resolve(plan.forget, data)
    if resolved.in_fit.numel() == 0:
        raise UsageError("no forget index falls in gif's training split: nothing to audit")
    store = Store(store_root, plan, data)
    forget_file = store.root / f"forget-{plan.forget.sha256[:20]}.json"
    if not forget_file.exists():
        write_forget(forget_file, plan.forget)
    seeds = list(range(plan.first_seed, plan.first_seed + plan.models))
    originals = [store.path("original", s) for s in seeds]
    retrained = [store.path("retrained", s + RETRAINED_SEED_OFFSET) for s in seeds]
    jobs_list = [(plan.recipe.replace(seed=s).as_dict(), p, None) for s, p in zip(seeds, originals)]
    jobs_list += [(plan.recipe.replace(seed=s + RETRAINED_SEED_OFFSET).as_dict(), p, str(forget_file))
                  for s, p in zip(seeds, retrained)]
    existing = {p for p in originals + retrained if p.exists()}
    trained_now = train_missing(jobs_list, data_dir, jobs, progress)
    for path in originals + retrained:  # every model of the store is the one recorded, made now or reused
        store.check(path, made_now=path not in existing)
    train_seconds = time.perf_counter() - start

    task = SampleRemoval(resolved, plan.criterion)
    unlearned, method_seconds = [], []
    for i, (seed, original) in enumerate(zip(seeds, originals)):
        args = plan.args.replace(seed=seed)
        path = store.path("unlearned", seed, args.as_dict())
        if progress:
            progress("unlearn", i, len(seeds), path.name)
        made_now = not path.exists()
        if made_now:
            loaded = load_model(original)
            result = run(task, loaded.model, data, args, rt, loaded.context(), report=False)
            save_edited(path, result.model, loaded, {}, result.outcome.hyper, args.method, args.as_dict(),
                        result.extras.get("runtime"))
            method_seconds.append(result.outcome.seconds)
        store.check(path, made_now)
        unlearned.append(path)
    if progress:
        progress("unlearn", len(seeds), len(seeds), "done")

    forget_split = task.target(data).split
    retain = task.retain(data).sample(RETAIN_SAMPLE, seed=0)
    u = _side_metrics(unlearned, data, forget_split, retain, rt)
    r = _side_metrics(retrained, data, forget_split, retain, rt)
    score = forget_score(u["confidences"], r["confidences"])
    ra_ratio = u["retain_accuracy"] / r["retain_accuracy"]
    ta_ratio = u["test_accuracy"] / r["test_accuracy"]
    indices = data.fit_indices[torch.isin(data.fit_indices, resolved.in_fit)].tolist()
    return {
        "format": "gif-audit", "version": 1, "method": plan.args.method, "args": plan.args.as_dict(),
        "models_per_side": plan.models, "seeds": seeds, "retrained_seed_offset": RETRAINED_SEED_OFFSET,
        "recipe": plan.recipe.as_dict(), "dataset": data.spec.name, "forget": plan.forget.describe(),
        "forget_in_training": len(indices), "forget_left_out_in_validation": resolved.in_validation.tolist(),
        "forget_score": score.score, "final_score": score.score * ra_ratio * ta_ratio,
        "retain_accuracy": {"unlearned": u["retain_accuracy"], "retrained": r["retain_accuracy"], "ratio": ra_ratio},
        "test_accuracy": {"unlearned": u["test_accuracy"], "retrained": r["test_accuracy"], "ratio": ta_ratio},
        "per_model": {"unlearned": {"retain": u["retain_accuracies"], "test": u["test_accuracies"]},
                      "retrained": {"retain": r["retain_accuracies"], "test": r["test_accuracies"]}},
        "epsilons": dict(zip((str(i) for i in indices), score.epsilons)),
        "buckets": {f"{k:g}": v for k, v in score.buckets.items()}, "delta": DELTA,
        "note": f"scores compare only at the same N (here {plan.models} models a side): the epsilon buckets stop "
                f"at ceil(ln(N - 1))",
        "store": {"root": str(store.root), "trained_now": trained_now,
                  "originals": [p.name for p in originals], "retrained": [p.name for p in retrained],
                  "unlearned": [p.name for p in unlearned]},
        "seconds": {"total": time.perf_counter() - start, "training": train_seconds,
                    "unlearning_now": sum(method_seconds)},
        "provenance": provenance(kind="audit"),
    }


def histogram(record: dict, path: Path) -> Optional[Path]:
    """A PNG of the per-example epsilons (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from ..io.files import save_figure

    eps = list(record["epsilons"].values())
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([min(e, 10.0) for e in eps], bins=40)
    ax.set_xlabel("epsilon per forget example (capped at 10 for the plot)")
    ax.set_ylabel("examples")
    ax.set_title(f"{record['method']}: F = {record['forget_score']:.4f}, final {record['final_score']:.4f} "
                 f"(N = {record['models_per_side']})")
    save_figure(fig, path)
    plt.close(fig)
    return path
