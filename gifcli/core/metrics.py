"""Metrics the unlearning community reports beside accuracy: membership inference, agreement
and divergence from a retrained model, parameter distance, and the average gap.

Membership inference (the common recipe): each sample's softmax entropy is the feature; a
logistic regression is fit to tell retained training samples (members) from test samples
(non-members), and the share of the probed samples it calls members is reported. A model that
has forgotten the forget set looks at it as it looks at unseen data: compare with the share on
held-out data and with the retrained model's share.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from ..data.datasets import Split
from ..math.mia import membership_share, softmax_entropy
from .args import Runtime
from .passes import evaluate, outputs

MIA_SAMPLES = 5000  # members and non-members used to fit the attack (and probed samples at most)
RETAIN_SAMPLE = 5000  # retained training samples every report measures (a fixed sample, seed 0)
# Avg. Gap: the mean absolute difference to a retrained model over these metrics (SalUn's UA, RA,
# TA and MIA; UA = 1 - forget accuracy has the same gap as the forget accuracy)
GAP_KEYS = ("forget.accuracy", "retain.accuracy", "test.accuracy", "mia.entropy")


def unlearning_metrics(model: nn.Module, data, task, rt: Runtime, mia: bool = True, svc: bool = False) -> dict:
    """The one set of metrics every command reports (evaluate, remove-class/-samples, backdoor
    recover, compare, audit, the API), as SalUn defines them:

    * ``forget``: the forget set's training samples, with the labels the model was trained with
      (UA = 1 - its accuracy);
    * ``retain``: a fixed sample of the retained training data (RA);
    * ``test``: the test data (for a class: the other classes' test images) (TA);
    * the task's own: a class's test images (``forget_test``), F1 (eq. 14), a backdoor's attack
      success and the poisoned images' accuracies;
    * ``mia``: the entropy attack's membership share on the forget set (and on held-out
      validation images), fit on retained (members) against test (non-members) samples; with
      ``svc`` also SalUn's SVC attack on five features.
    """
    forget = task.target(data).split
    retain = task.retain(data).sample(RETAIN_SAMPLE, seed=0)
    test, parts = task.test_parts(data)
    out: dict = {"forget": evaluate(model, forget, rt, "forget").as_dict(),
                 "retain": evaluate(model, retain, rt, "retained").as_dict()}
    if test is not None:
        out["test"] = evaluate(model, test, rt, "test").as_dict()
    out.update({name: evaluate(model, split, rt, "test").as_dict() for name, split in parts.items()})
    out.update(task.report(model, data, rt, out))
    if mia and test is not None:
        probes = {"forget": forget}
        validation = getattr(data, "validation", None)
        if validation is not None and len(validation):
            probes["held_out"] = task.validation(data)
        shares = mia_shares(model, retain, test, probes, rt)
        out["mia"] = {"entropy": shares["forget"], "held_out": shares.get("held_out")}
        if svc:
            out["mia"]["svc"] = svc_mia_shares(model, retain, test, {"forget": forget}, rt)["forget"]
    return out


def entropies(model: nn.Module, split: Split, rt: Runtime) -> torch.Tensor:
    return softmax_entropy(outputs(model, split, rt)) if len(split) else torch.zeros(0, dtype=torch.float64)


def mia_shares(model: nn.Module, members: Split, nonmembers: Split, probes: dict[str, Split], rt: Runtime,
               samples: int = MIA_SAMPLES) -> dict[str, Optional[float]]:
    """Per probed split, the share the entropy attack (fit on members vs non-members) calls members."""
    m = entropies(model, members.sample(samples, seed=0), rt)
    t = entropies(model, nonmembers.sample(samples, seed=1), rt)
    out: dict[str, Optional[float]] = {}
    for name, split in probes.items():
        if len(split) == 0 or len(m) == 0 or len(t) == 0:
            out[name] = None
            continue
        out[name] = membership_share(m, t, entropies(model, split.sample(samples, seed=2), rt))
    return out


@torch.inference_mode()
def agreement(model: nn.Module, other: nn.Module, split: Split, rt: Runtime) -> Optional[float]:
    """Share of ``split`` on which the two models predict the same class."""
    if len(split) == 0:
        return None
    a, b = outputs(model, split, rt).argmax(1), outputs(other, split, rt).argmax(1)
    return float((a == b).double().mean())


@torch.inference_mode()
def mean_kl(reference: nn.Module, model: nn.Module, split: Split, rt: Runtime) -> Optional[float]:
    """Mean over ``split`` of KL(p_reference || p_model) between the softmax outputs."""
    if len(split) == 0:
        return None
    p = torch.log_softmax(outputs(reference, split, rt).double(), 1)
    q = torch.log_softmax(outputs(model, split, rt).double(), 1)
    return float((p.exp() * (p - q)).sum(1).mean())


def l2_distance(model: nn.Module, other: nn.Module) -> Optional[float]:
    a = parameters_to_vector(model.parameters()).detach().cpu()
    b = parameters_to_vector(other.parameters()).detach().cpu()
    return float((a - b).norm()) if a.shape == b.shape else None


def avg_gap(model: dict, reference: dict, keys: Sequence[str]) -> Optional[float]:
    """Mean absolute difference over ``keys`` (dotted paths into two reports), in points of 0-1 values."""
    diffs = []
    for key in keys:
        a, b = _get(model, key), _get(reference, key)
        if a is None or b is None:
            return None
        diffs.append(abs(float(a) - float(b)))
    return sum(diffs) / len(diffs) if diffs else None


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


# The columns every table of these metrics draws from (the commands' tables, gif compare's
# results.md): name -> (the report's dotted key, whether it is a share of 1 shown as a percentage).
COLUMNS = {
    "forget acc": ("forget.accuracy", True),
    "forget loss": ("forget.loss", False),
    "class test acc": ("forget_test.accuracy", True),
    "retain acc": ("retain.accuracy", True),
    "test acc": ("test.accuracy", True),
    "test loss": ("test.loss", False),
    "F1": ("f1", False),
    "MIA entropy": ("mia.entropy", True),
    "MIA held-out": ("mia.held_out", True),
    "MIA SVC conf.": ("mia.svc.confidence", True),
    "attack success": ("attack_success_rate", True),
    "agree. w/ retrained": ("agreement_forget", True),
    "KL(retrained‖·)": ("kl_forget", False),
    "Avg. Gap": ("avg_gap", True),
    "seconds": ("method_seconds", False),
    "RTE": ("rte", False),
}


def column(report: dict, name: str) -> Optional[float]:
    """A column's value in a report (a share stays a share; the table says how to show it)."""
    return _get(report, COLUMNS[name][0])


# ---------------------------------------------------------------------------------------------
# the SVC attack SalUn reports (from "Model sparsity can simplify machine unlearning", Jia et al.)
SVC_FEATURES = ("correctness", "confidence", "entropy", "m_entropy", "probability")
SVC_SAMPLES = 2000  # members and non-members fit per attack (an RBF SVC is quadratic in them)


def attack_features(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per sample: correctness, confidence p_y, entropy, modified entropy and the probability vector.

    Modified entropy (Song & Mittal, 2021): -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i).
    """
    p = torch.softmax(logits.double(), 1)
    labels = labels.to(torch.int64)
    py = p.gather(1, labels[:, None]).squeeze(1)
    logp = torch.log(p.clamp(min=1e-30))
    log1mp = torch.log((1 - p).clamp(min=1e-30))
    others = torch.ones_like(p, dtype=torch.bool).scatter_(1, labels[:, None], False)
    m_entropy = -(1 - py) * torch.log(py.clamp(min=1e-30)) - (p * log1mp * others).sum(1)
    return {"correctness": (p.argmax(1) == labels).double()[:, None], "confidence": py[:, None],
            "entropy": -(p * logp).sum(1)[:, None], "m_entropy": m_entropy[:, None], "probability": p}


def svc_share(member: torch.Tensor, nonmember: torch.Tensor, probe: torch.Tensor) -> Optional[float]:
    """Share of ``probe`` rows an RBF SVC (C=3, gamma='auto'), fit on members vs non-members, calls members;
    None when there is nothing to fit on or to probe (an SVC needs both classes)."""
    import numpy as np
    from sklearn.svm import SVC

    if len(member) == 0 or len(nonmember) == 0 or len(probe) == 0:
        return None
    x = torch.cat([member, nonmember]).numpy()
    y = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    return float(clf.predict(probe.numpy()).mean())


def svc_mia_shares(model: nn.Module, members: Split, nonmembers: Split, probes: dict[str, Split], rt: Runtime,
                   samples: int = SVC_SAMPLES) -> dict[str, dict[str, Optional[float]]]:
    """Per probed split and feature, the share of samples the SVC attack calls members."""
    def feats(split: Split) -> dict[str, torch.Tensor]:
        return attack_features(outputs(model, split, rt), split.labels)

    if len(members) == 0 or len(nonmembers) == 0:  # no attack can be fit
        return {name: {f: None for f in SVC_FEATURES} for name in probes}
    m = feats(members.sample(samples, seed=0))
    t = feats(nonmembers.sample(samples, seed=1))
    out: dict[str, dict[str, Optional[float]]] = {}
    for name, split in probes.items():
        if len(split) == 0:
            out[name] = {f: None for f in SVC_FEATURES}
            continue
        f = feats(split.sample(samples, seed=2))
        out[name] = {k: svc_share(m[k], t[k], f[k]) for k in SVC_FEATURES}
    return out
