"""Tasks: what is forgotten, the data the Hessian is of, and how an edit is scored.

A task gives the unlearning core four things:

* ``target(data)``: the forget samples with the labels the model was trained with (and, for a
  relabelling, the labels it should have learnt): ``g`` is the gradient of their loss;
* ``training(data)``, ``remaining(data)``, ``retain(data)``: the training data as the model saw
  it, without the forget set, and what a retrained model is trained on (a method chooses among
  them: GIF's Hessian is of ``training`` or ``remaining``, fine-tuning walks ``retain``);
* ``forget_probe``, ``test_parts``, ``report``: the splits its reports are made
  of and the metrics only it has, so that no caller needs to know which kind of task it holds;
* ``scorer(criterion, ...)``: how a candidate edit is scored on the validation split (never on
  the test set) to choose a scale or another hyper-parameter;

Scale criteria (``--scale-criterion``; each task has a default):

* ``f1`` (class removal): eq. 14's F1 of (1 - accuracy on the validation images of the class)
  and the accuracy on the other validation images.
* ``match`` (class removal): how close the class's validation outputs come to the unedited model's
  own outputs with the class masked (mean KL), among the scales that forget the class (at most 0.5 %
  of its validation images still predicted as it) and keep the other validation images within 0.5
  points of the unedited model.
* ``privacy`` (sample forgetting, default): a model retrained without the samples treats them
  like data it never saw, so the scale whose edited model's mean loss on the forget set is
  closest to its mean loss on the held-out validation images, among the scales that keep
  validation accuracy within 0.5 points of the unedited model's.
* ``repair`` (mislabeled or harmful samples): the scale with the best validation accuracy.
* ``backdoor`` (relabelling a poisoned set): F1 of (1 - attack success on the poisoned
  validation images) and the utility, the mean of their true-label accuracy and the clean
  validation accuracy.

For a sample forget set the validation split is scored without the forget set's own images that
fall in it: the user named them as wrong or private, so their labels never judge an edit.
"""
from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import nn

from ..data.backdoor import BackdoorData
from ..data.datasets import Data, Split, check_label, materialise
from ..data.forget import ResolvedForget
from ..errors import GifError, NonFiniteError, UsageError
from ..registry import Registry
from .args import Runtime
from .passes import Metrics, evaluate, masked_outputs, outputs, predictions

# match criterion: the share of the class's validation images that may still be predicted as it. 0.5 %
# (2 of MNIST's ~460 a class): 1 % left 1.1-1.6 % of three classes' test images predicted as the class,
# 0 let one stubborn validation image send an edit back to the paper's step (docs/methods.md)
MATCH_FORGET_LIMIT = 0.005
PRIVACY_ACCURACY_SLACK = 0.005  # privacy criterion: validation accuracy may fall at most 0.5 points

Scorer = Callable[[nn.Module], dict]


@dataclass
class Target:
    """The forget samples: ``split`` carries the labels the model was trained with."""

    split: Split
    describe: dict
    true_labels: Optional[torch.Tensor] = None  # relabel: the labels the model should have learnt

    @property
    def kind(self) -> str:
        return "relabel" if self.true_labels is not None else "remove"


def f1_score(forget_accuracy: float, test_accuracy: float) -> float:
    """eq. (14): harmonic mean of (1 - forget accuracy) and test accuracy."""
    a, b = 1.0 - forget_accuracy, test_accuracy
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def _acc(m: Metrics) -> float:
    return m.accuracy if m.accuracy is not None else 0.0


class Task(ABC):
    """What to forget and how to score forgetting (see the module docstring)."""

    name: ClassVar[str]
    default_criterion: ClassVar[str]
    criteria: ClassVar[tuple[str, ...]]
    # what an influence edit aims at when the model is at a stationary point (``--target auto``), and
    # the scale criterion that fits a target, where it is not ``default_criterion``
    target_at_optimum: ClassVar[str] = "forget"
    target_criteria: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def target(self, data: Data) -> Target: ...

    @abstractmethod
    def training(self, data: Data) -> Split:
        """The training data as the model was trained on it (the forget set included)."""

    @abstractmethod
    def remaining(self, data: Data) -> Split:
        """The training data without the forget set."""

    def report(self, model: nn.Module, data: Data, rt: Runtime, measured: dict) -> dict:
        """The metrics only this kind of task has, beside the common ones already ``measured``
        (``gifcli.core.metrics.unlearning_metrics`` calls this and merges the result)."""
        return {}

    @abstractmethod
    def describe(self) -> dict: ...

    def retain(self, data: Data) -> Split:
        """What a model retrained without the forget set is trained on (the remaining data, unless
        the task relabels: then the forget set with its true labels too)."""
        return self.remaining(data)

    def validation(self, data: Data) -> Split:
        """The held-out images hyper-parameters are chosen on."""
        return data.validation

    def forget_probe(self, data: Data) -> Split:
        """Where a model and a retrained one are compared on the forgotten data (agreement, KL)."""
        return self.target(data).split

    def test_parts(self, data: Data) -> tuple[Split, dict[str, Split]]:
        """The test split a report calls ``test``, and other named test splits it reports too."""
        return data.test_split, {}


    def criterion(self, name: Optional[str]) -> str:
        name = name or self.default_criterion
        if name not in self.criteria:
            raise UsageError(f"scale criterion {name!r} does not apply to {self.name}; use {', '.join(self.criteria)}")
        return name

    def scorer(self, criterion: Optional[str], data: Data, base: nn.Module, rt: Runtime,
               error: Optional[float] = None, seed: int = 0) -> Scorer:
        """The criterion's scorer; with ``error``, on as many validation images as an accuracy's standard
        error of ``error`` needs (:func:`sized_sample`), else on the whole validation split."""
        take = (lambda split: split) if error is None else (lambda split: sized_sample(split, base, rt, error, seed))
        factory = SCALE_CRITERIA.get(self.criterion(criterion))
        if len(inspect.signature(factory).parameters) < 5:  # a plug-in written before `take`: the whole split
            return factory(self, data, base, rt)
        return factory(self, data, base, rt, take)


class ClassRemoval(Task):
    name = "class removal"
    default_criterion = "f1"
    criteria = ("f1", "match", "privacy", "repair")
    target_at_optimum = "masked"  # toward the model's own outputs with the class masked (docs/methods.md)
    target_criteria = {"masked": "match"}

    def __init__(self, label: int) -> None:
        self.label = int(label)

    def _check(self, data: Data) -> None:
        data.check_label(self.label)

    def target(self, data: Data) -> Target:
        self._check(data)
        fit = data.fit
        split = fit.where(fit.labels == self.label)
        if len(split) == 0:
            raise GifError(f"the training split has no sample of label {self.label}")
        return Target(split, {**self.describe(), "count": len(split)})

    def training(self, data: Data) -> Split:
        self._check(data)
        return data.fit

    def remaining(self, data: Data) -> Split:
        self._check(data)
        fit = data.fit
        return fit.where(fit.labels != self.label)

    def split_by_label(self, split: Split) -> tuple[Split, Split]:
        return split.where(split.labels == self.label), split.where(split.labels != self.label)

    def forget_probe(self, data: Data) -> Split:
        return self.split_by_label(data.test_split)[0]

    def test_parts(self, data: Data):
        forget_test, others = self.split_by_label(data.test_split)
        return others, {"forget_test": forget_test}

    def report(self, model: nn.Module, data: Data, rt: Runtime, measured: dict) -> dict:
        """F1 (eq. 14) of forgetting the class's test images and keeping the others'."""
        f, t = measured["forget_test"]["accuracy"], measured["test"]["accuracy"]
        return {"f1": f1_score(f or 0.0, t or 0.0)}

    def describe(self) -> dict:
        return {"kind": "label", "label": self.label}


class SampleRemoval(Task):
    name = "sample forgetting"
    default_criterion = "privacy"
    criteria = ("privacy", "repair")

    def __init__(self, forget: ResolvedForget, criterion: str = "privacy") -> None:
        self.forget = forget
        if criterion not in self.criteria:
            raise UsageError(f"scale criterion {criterion!r} does not apply to sample forgetting; use privacy or repair")
        self.default_criterion = criterion  # type: ignore[misc]

    def _mask(self, data: Data) -> torch.Tensor:
        return torch.isin(data.fit_indices, self.forget.in_fit)

    def target(self, data: Data) -> Target:
        fit = data.fit
        split = fit.where(self._mask(data))
        return Target(split, {**self.describe(), "count": len(split)})

    def training(self, data: Data) -> Split:
        return data.fit

    def remaining(self, data: Data) -> Split:
        return data.fit.where(~self._mask(data))

    def validation(self, data: Data) -> Split:
        """The validation split minus the forget set's images in it: those were named as ones to forget
        (wrongly labelled, harmful, or private), so they never score a candidate edit."""
        val = data.validation
        return val.where(~torch.isin(val.indices, self.forget.in_validation))

    def describe(self) -> dict:
        return {**self.forget.forget.describe(), "in_training": int(self.forget.in_fit.numel()),
                "left_out_in_validation": self.forget.in_validation.tolist()}


class BackdoorRecovery(Task):
    name = "backdoor recovery"
    default_criterion = "backdoor"
    criteria = ("backdoor",)

    def __init__(self, backdoor: BackdoorData) -> None:
        self.bd = backdoor

    def target(self, data: Data) -> Target:
        wrong = self.bd.poisoned_fit(true_labels=False)
        true = self.bd.poisoned_fit(true_labels=True)
        return Target(wrong, {**self.describe(), "count": len(wrong)}, true.labels)

    def training(self, data: Data) -> Split:
        return self.bd.fit(true_labels=False)  # every training image as the backdoored model saw it

    def remaining(self, data: Data) -> Split:
        return self.bd.clean_fit()

    def retain(self, data: Data) -> Split:
        return self.bd.fit(true_labels=True)  # retraining relabels the poisoned images correctly

    def report(self, model: nn.Module, data: Data, rt: Runtime, measured: Optional[dict] = None) -> dict:
        """Table 3's columns and the attack success rate (every triggered test image not of the target)."""
        target = self.bd.target_label
        bd = self.bd.bd_data()
        bd_pred = predictions(model, bd, rt)
        trig_pred = predictions(model, self.bd.triggered_test, rt)
        test = evaluate(model, data.test_split, rt, "test")
        return {
            "bd_data_backdoor_label_accuracy": float((bd_pred == target).double().mean()),
            "bd_data_true_label_accuracy": float((bd_pred == bd.labels).double().mean()),
            "test_accuracy": test.accuracy,
            "attack_success_rate": float((trig_pred == target).double().mean()),
            "counts": {"bd_data": len(bd), "test": test.count, "triggered_test": len(self.bd.triggered_test)},
        }

    def describe(self) -> dict:
        return {"kind": "relabel", "poison_sha256": self.bd.doc["indices_sha256"], "target_label": self.bd.target_label}




# ---------------------------------------------------------------------------------------------
# scale criteria: (task, data, unedited model, runtime, take) -> scorer(model) -> row with "objective";
# ``take(split)`` is the part of a validation split the scorer walks (all of it, or a sized sample)
Take = Callable[[Split], Split]
SCALE_CRITERIA: Registry[Callable[[Task, Data, nn.Module, Runtime, Take], Scorer]] = Registry("scale criterion")
SIZING_PILOT = 1024  # images the base model's accuracy is first measured on, to size a sample


def sized_sample(split: Split, base: nn.Module, rt: Runtime, error: float, seed: int = 0) -> Split:
    """As many images of ``split`` as an accuracy's standard error of ``error`` needs, p (1 - p) / error^2,
    with p the unedited model's accuracy on a pilot sample of :data:`SIZING_PILOT` (at least the pilot;
    all of ``split`` when it is not larger). One seeded draw: the pilot is the sample's first part."""
    if len(split) <= SIZING_PILOT:
        return split
    p = _acc(evaluate(base, split.sample(SIZING_PILOT, seed), rt, "validation"))
    need = math.ceil(max(p * (1 - p), 1.0 / SIZING_PILOT) / error ** 2)
    return split.sample(max(need, SIZING_PILOT), seed)


@SCALE_CRITERIA.register("f1")
def _f1(task: Task, data: Data, base: nn.Module, rt: Runtime, take: Take) -> Scorer:
    if not isinstance(task, ClassRemoval):
        raise UsageError("the f1 criterion needs a class to forget")
    forget, others = (materialise(take(s), rt.batch_size, rt.workers) for s in task.split_by_label(data.validation))

    def score(model: nn.Module) -> dict:
        f, t = evaluate(model, forget, rt, "validation"), evaluate(model, others, rt, "validation")
        f1 = f1_score(_acc(f), _acc(t))
        return {"forget": f.as_dict(), "test": t.as_dict(), "f1": f1, "feasible": True, "objective": f1}

    return score


@SCALE_CRITERIA.register("match")
def _match(task: Task, data: Data, base: nn.Module, rt: Runtime, take: Take) -> Scorer:
    """How close the edited model's outputs on the class's validation images (never trained on) come to
    what a model that never saw the class would output, as the unedited model estimates it (its own
    output with the class masked): mean KL(target || edited), among the scales that forget the class (at
    most MATCH_FORGET_LIMIT of its validation images still predicted as it) and keep the other
    validation images' accuracy within PRIVACY_ACCURACY_SLACK of the unedited model's."""
    if not isinstance(task, ClassRemoval):
        raise UsageError("the match criterion needs a class to forget")
    forget, others = (materialise(take(s), rt.batch_size, rt.workers) for s in task.split_by_label(data.validation))
    wanted = masked_outputs(base, forget, rt)
    log_wanted = torch.log(wanted.clamp_min(1e-300))
    floor = _acc(evaluate(base, others, rt, "validation")) - PRIVACY_ACCURACY_SLACK

    def score(model: nn.Module) -> dict:
        with torch.inference_mode():
            logp = torch.log_softmax(outputs(model, forget, rt).double(), 1)
        if not bool(torch.isfinite(logp).all()):
            raise NonFiniteError("the edited model's outputs are not finite on the validation images")
        kl = float((wanted * (log_wanted - logp)).sum(1).mean())
        f, t = float((logp.argmax(1) == forget.labels).double().mean()), evaluate(model, others, rt, "validation")
        shortfall = max(0.0, floor - _acc(t)) + max(0.0, f - MATCH_FORGET_LIMIT)  # ranks infeasible scales
        return {"forget": {"accuracy": f, "count": len(forget)}, "test": t.as_dict(), "kl_to_target": kl,
                "feasible": shortfall == 0.0, "shortfall": shortfall, "objective": -kl}

    return score


@SCALE_CRITERIA.register("privacy")
def _privacy(task: Task, data: Data, base: nn.Module, rt: Runtime, take: Take) -> Scorer:
    forget = materialise(take(task.target(data).split), rt.batch_size, rt.workers)
    validation = materialise(take(task.validation(data)), rt.batch_size, rt.workers)
    floor = _acc(evaluate(base, validation, rt, "validation")) - PRIVACY_ACCURACY_SLACK

    def score(model: nn.Module) -> dict:
        f, v = evaluate(model, forget, rt, "forget"), evaluate(model, validation, rt, "validation")
        gap = abs((f.loss or 0.0) - (v.loss or 0.0))
        ok = _acc(v) >= floor
        return {"forget": f.as_dict(), "validation": v.as_dict(), "loss_gap": gap, "feasible": ok,
                "objective": -gap}

    return score


@SCALE_CRITERIA.register("repair")
def _repair(task: Task, data: Data, base: nn.Module, rt: Runtime, take: Take) -> Scorer:
    validation = materialise(take(task.validation(data)), rt.batch_size, rt.workers)

    def score(model: nn.Module) -> dict:
        v = evaluate(model, validation, rt, "validation")
        return {"validation": v.as_dict(), "feasible": True, "objective": _acc(v)}

    return score


@SCALE_CRITERIA.register("backdoor")
def _backdoor(task: Task, data: Data, base: nn.Module, rt: Runtime, take: Take) -> Scorer:
    if not isinstance(task, BackdoorRecovery):
        raise UsageError("the backdoor criterion needs a poison file")
    bd = task.bd
    poisoned = materialise(take(bd.validation(poisoned=True)), rt.batch_size, rt.workers)
    clean = materialise(take(bd.validation(poisoned=False)), rt.batch_size, rt.workers)
    not_target = poisoned.labels != bd.target_label

    def score(model: nn.Module) -> dict:
        vp = predictions(model, poisoned, rt)
        asr = float((vp[not_target] == bd.target_label).double().mean()) if bool(not_target.any()) else 0.0
        true_acc = float((vp == poisoned.labels).double().mean()) if len(poisoned) else 0.0
        clean_acc = _acc(evaluate(model, clean, rt, "validation"))
        utility = 0.5 * (true_acc + clean_acc)
        f1 = f1_score(asr, utility)
        return {"attack_success": asr, "utility": utility, "f1": f1, "feasible": True, "objective": f1}

    return score


@dataclass
class SplitData:
    """Data given as ready splits (the Python API): the parts of :class:`Data` that tasks use."""

    fit: Split  # the training data the Hessian pool is drawn from
    validation: Optional[Split] = None
    test: Optional[Split] = None
    num_classes: int = 0

    @property
    def test_split(self) -> Split:
        if self.test is None:
            raise UsageError("this needs test data: pass test=...")
        return self.test

    def check_label(self, label: Any, what: str = "label", error: type = UsageError) -> int:
        return check_label(label, self.num_classes, what, error)


class GivenForget(Task):
    """Forget samples given as a split; the retained training data is the data's ``fit`` split
    (the Hessian of ``all`` is of the retained data and the forget samples together)."""

    name = "sample forgetting"
    default_criterion = "privacy"
    criteria = ("privacy", "repair")

    def __init__(self, forget: Split, criterion: str = "privacy") -> None:
        if len(forget) == 0:
            raise UsageError("the forget set is empty")
        self.forget = forget
        self.default_criterion = criterion  # type: ignore[misc]
        self.criterion(criterion)

    def target(self, data) -> Target:
        return Target(self.forget, {**self.describe(), "count": len(self.forget)})

    def training(self, data) -> Split:
        from ..data.datasets import concat

        return concat(data.fit, self.forget)  # the retained data, then the forget samples

    def remaining(self, data) -> Split:
        return data.fit

    def test_parts(self, data):
        if isinstance(data, SplitData) and data.test is None:
            return None, {}  # the API without test data: nothing to report on it
        return data.test_split, {}

    def describe(self) -> dict:
        return {"kind": "samples", "count": len(self.forget)}
