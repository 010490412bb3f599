"""gif evaluate: a model's metrics for a forget request, against references.

Every command reports the same metrics, defined once (``gifcli.core.metrics.unlearning_metrics``,
as SalUn defines them): ``forget`` (the forget set's training samples), ``retain`` (a fixed sample
of the retained training data), ``test`` (for a class: the other classes' test images), the
task's own (a class's test images as ``forget_test`` and F1; a backdoor's attack success), and the
entropy membership attack on the forget set (``mia.entropy``; ``mia.held_out`` on validation
images). Without a forget request: loss and accuracy on every test image.

With a ``baseline`` (any other model) the report adds its metrics, test-set agreement and the
parameter distance; with ``retrained`` (a model trained without the forget set) also the gap on
each metric and their mean, the Avg. Gap (``GAP_KEYS``: forget, retain and test accuracy and the
forget-set MIA share, in points of 0-1 values; ``gif compare`` uses the same), the agreement with
the retrained model on the forgotten data, and the mean KL(p_retrained || p_model) there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from ..core.args import Runtime
from ..core.metrics import GAP_KEYS, agreement, avg_gap, l2_distance, mean_kl
from ..core.metrics import unlearning_metrics as _unlearning_metrics
from ..core.tasks import Task, f1_score
from ..core.passes import evaluate as evaluate_split
from ..data.datasets import Data
from ..parsing import percent
from ..errors import GifError
from ..io.files import provenance
from ..core.checkpoints import Loaded

@dataclass(frozen=True)
class Thresholds:
    min_test_acc: Optional[float] = None  # percent
    max_forget_acc: Optional[float] = None  # percent
    max_gap: Optional[float] = None  # points (percent) of Avg. Gap

    def as_dict(self) -> dict:
        return {"min_test_acc": self.min_test_acc, "max_forget_acc": self.max_forget_acc, "max_gap": self.max_gap}


def model_metrics(model: nn.Module, data: Data, task: Optional[Task], rt: Runtime, mia: bool = True) -> dict:
    """The metrics of one model for one forget request (see the module docstring)."""
    if task is None:
        return {"test": evaluate_split(model, data.test_split, rt, "test").as_dict()}
    return _unlearning_metrics(model, data, task, rt, mia=mia)


def against(model: nn.Module, metrics: dict, reference: Loaded, ref_metrics: dict, data: Data,
            task: Optional[Task], rt: Runtime, retrained: bool) -> dict:
    out = {"model": reference.path, "model_sha256": reference.sha, **ref_metrics,
           "agreement_test": agreement(model, reference.model, data.test_split, rt),
           "l2_distance": l2_distance(model, reference.model),
           "train_seconds": reference.meta.get("train_seconds")}
    if retrained and task is not None:
        forget = task.forget_probe(data)
        out["gaps"] = {k: _gap(metrics, ref_metrics, k) for k in GAP_KEYS}
        out["avg_gap"] = avg_gap(metrics, ref_metrics, GAP_KEYS)
        out["agreement_forget"] = agreement(model, reference.model, forget, rt)
        out["kl_forget"] = mean_kl(reference.model, model, forget, rt)
    return out


def _gap(a: dict, b: dict, key: str) -> Optional[float]:
    return avg_gap(a, b, [key])


def evaluate_report(loaded: Loaded, data: Data, task: Optional[Task], rt: Runtime,
                    baseline: Optional[Loaded] = None, retrained: Optional[Loaded] = None,
                    thresholds: Thresholds = Thresholds(), mia: bool = True) -> dict:
    for other in (baseline, retrained):
        if other is not None and (other.meta.get("num_classes") != loaded.meta.get("num_classes")
                                  or list(other.meta.get("input_shape", [])) != list(loaded.meta.get("input_shape", []))):
            raise GifError(f"{other.path} is a model of another dataset or class count than {loaded.path}")
    metrics = model_metrics(loaded.model, data, task, rt, mia)
    report = {"format": "gif-report", "version": 1, "model": loaded.path, "model_sha256": loaded.sha,
              "dataset": data.spec.name, "forget_request": task.describe() if task is not None else None, **metrics}
    if baseline is not None:
        report["baseline"] = against(loaded.model, metrics, baseline, model_metrics(baseline.model, data, task, rt, mia),
                                     data, task, rt, retrained=False)
    if retrained is not None:
        report["retrained"] = against(loaded.model, metrics, retrained,
                                      model_metrics(retrained.model, data, task, rt, mia), data, task, rt, retrained=True)
    report["thresholds"] = thresholds.as_dict()
    report["violations"] = violations(report, thresholds)
    report["passed"] = not report["violations"]
    report["provenance"] = provenance(kind="evaluate")
    return report


def violations(report: dict, t: Thresholds) -> list[str]:
    out = []
    test_acc = report["test"]["accuracy"]
    if t.min_test_acc is not None and (test_acc is None or 100 * test_acc < t.min_test_acc):
        out.append(f"test accuracy {_pct(test_acc)} < {t.min_test_acc}%")
    if t.max_forget_acc is not None:
        if "forget" not in report:
            raise GifError("--max-forget-acc needs a forget request (--forget-label or --forget)")
        fa = report["forget"]["accuracy"]
        if fa is not None and 100 * fa > t.max_forget_acc:
            out.append(f"forget accuracy {_pct(fa)} > {t.max_forget_acc}%")
    if t.max_gap is not None:
        gap = (report.get("retrained") or {}).get("avg_gap")
        if gap is None:
            raise GifError("--max-gap needs --retrained and a forget request")
        if 100 * gap > t.max_gap:
            out.append(f"Avg. Gap {100 * gap:.2f} points > {t.max_gap}")
    return out


def _pct(v: Optional[float]) -> str:
    return percent(v, "n/a")


__all__ = ["GAP_KEYS", "Thresholds", "evaluate_report", "f1_score", "model_metrics"]
