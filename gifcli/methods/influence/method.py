"""gif, fif, pif, if and grad: select J, compute the influence delta over J, choose the scale on
validation, apply theta_J <- theta_J - scale * delta (the paper's eq. 6, 9 and 13).

They share one set of arguments (:class:`InfluenceArgs`), and write the mask (when they select J)
and the influence file beside the edited checkpoint; ``gif verify`` re-derives the edited weights
from the base model, the influence file and the recorded scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ...core.args import Runtime, UnlearnArgs
from ...core.edit import edited_copy
from ...core.methods import Method, MethodArgs, MethodOutcome, MethodReport, ModelContext, Verified, arg
from ...core.passes import masked_outputs
from ...core.search import best_row, infeasible_warning, rank, scored
from ...core.tasks import Task
from ...core.timing import Phases
from ...data.datasets import Data
from ...errors import UsageError
from ...math.kfac import DEFAULT_KFAC_DAMPING
from ...math.selection import CRITERIA, OUTPUT_SCORES
from ...parsing import parse_scales, parse_size
from .lstsq import SOLVERS, SolverOptions
from .steps import (TARGETS, InfluenceRun, gradient_coherence, gradients, influences, masked_target_gradient,
                    resolve_target, select, stationarity_record, stationarity_warning, step_cap, sweep_scales,
                    target_gradient)

HVP_MODES = ("auto", "retain", "recompute", "forward")
HESSIAN_DATA = ("remaining", "all")
RECURRENCES = ("float64", "model")
PRECONDITIONERS = ("none", "kfac")


@dataclass(frozen=True)
class InfluenceArgs(MethodArgs):
    """The arguments of the influence methods (gif, fif, pif, if, grad)."""

    # select: how J is chosen (gif select)
    criterion: str = arg(f"how J is chosen: {', '.join(CRITERIA)}", "topk-outputs", choices=CRITERIA, group="select")
    ratio: float = arg("share of each layer's parameters in J, in (0, 1]", 0.1, group="select")
    threshold: Optional[float] = arg("threshold criterion: score a unit must exceed (default: the layer's mean)",
                                     group="select")
    output_score: str = arg("topk-outputs/threshold score: 'abs' (mean |output|, the paper's) or 'positive' "
                            "(mean max(output, 0), what a following ReLU passes on)", "abs", choices=OUTPUT_SCORES,
                            group="select")
    # solve: the influence vector over J (gif influence)
    solver: str = arg(f"linear solver: {', '.join(SOLVERS)}", "lsmr", choices=SOLVERS.names, group="solve")
    tol: float = arg("stop at this relative residual of the normal equations", 1e-2, group="solve")
    max_iter: int = arg("maximum solver iterations (each costs two Hessian-vector products; LSMR returns its best "
                        "iterate when it stops there)", 30, group="solve")
    damping: float = arg("lambda of min ||A x - b||^2 + lambda ||x||^2 (regularises the solve)", 0.0, group="solve")
    weight_decay: Union[str, float] = arg("add the training objective's weight decay to H: 'auto' (from the "
                                          "checkpoint's training config), a number, or 0", 0.0, group="solve")
    recurrence: str = arg("precision of the solver's own vectors: float64 or model (the model's dtype)", "float64",
                          choices=RECURRENCES, group="solve")
    preconditioner: str = arg("preconditioner of the solve: none, or kfac (per-layer Kronecker factors of Linear and "
                              "Conv2d layers, fitted on the Hessian sample)", "none", choices=PRECONDITIONERS,
                              group="solve")
    kfac_damping: float = arg("kfac: damping relative to each layer's mean K-FAC curvature", DEFAULT_KFAC_DAMPING,
                              group="solve")
    hvp_mode: str = arg("retain (keep first-order graphs), recompute (constant memory), forward, or auto "
                        "(retain when the graphs fit --memory-budget)", "auto", choices=HVP_MODES, group="solve")
    memory_budget: Optional[float] = arg("what the kept graphs may use with hvp-mode auto, e.g. 2GiB "
                                         "(default: half the free device memory)", parse=parse_size, group="solve")
    hessian_samples: int = arg("training samples in the Hessian sample", 256, group="solve")
    hessian_data: str = arg("the data the Hessian is of: 'all' (what the model was trained on: the influence "
                            "function's derivative at eps = 0) or 'remaining' (minus the forget set, eq. 9 with "
                            "eps = -1)", "all", choices=HESSIAN_DATA, group="solve")
    target: str = arg("the gradient the edit is of: 'auto' (measure how far the model is from a stationary point "
                      "of its training loss: where it is at one, 'masked' steps for a class and the paper's one "
                      "'forget' step otherwise; up to --newton-steps 'remaining' steps where it is not), 'forget' "
                      "(the forget set's, the paper's), 'remaining' "
                      "(minus the retained data's: a Newton step on the retained objective, which also holds where "
                      "the model is not at an optimum), 'forget-then-remaining' (the first step forget, later "
                      "steps remaining), or 'masked' (toward the unedited model's outputs with the trained label "
                      "masked)", "auto", choices=TARGETS, group="solve")
    gradient_samples: int = arg("retained training samples the training loss's gradient is measured on "
                                "(--target remaining and the stationarity check; 0: all of it, a sample is faster "
                                "and noisier)", 0, group="solve")
    # step: how many steps and at which scale (remove-class, remove-samples, backdoor recover; gif apply takes a scale)
    newton_steps: Optional[int] = arg("the most re-linearised steps: each solves again at the edited weights and "
                                      "chooses its own scale on validation; stops early when a step no longer "
                                      "improves the validation criterion (default: 8 toward the masked outputs, 3 "
                                      "otherwise; the paper's target at a stationary point, or a given --scale: one "
                                      "step)", group="step")
    scales: Optional[tuple[float, ...]] = arg("the scale: 'auto' (bracketed from 1 by factors of 4, then refined to "
                                              "2^(1/4), chosen on validation), a number, or a comma-separated list "
                                              "to choose from", flag="scale", parse=parse_scales, group="step")

    def validate(self) -> None:
        if not (isinstance(self.ratio, (int, float)) and 0.0 < self.ratio <= 1.0):
            raise UsageError(f"ratio must be in (0, 1], got {self.ratio}")
        if not (math.isfinite(self.tol) and self.tol > 0):
            raise UsageError(f"--tol must be a positive number, got {self.tol}")
        if self.max_iter <= 0:
            raise UsageError(f"--max-iter must be positive, got {self.max_iter}")
        if not (math.isfinite(self.damping) and self.damping >= 0):
            raise UsageError(f"--damping must be a finite number >= 0, got {self.damping}")
        if self.weight_decay != "auto":
            try:
                wd = float(self.weight_decay)
            except (TypeError, ValueError):
                raise UsageError(f"--weight-decay must be 'auto' or a number, got {self.weight_decay!r}") from None
            if not (math.isfinite(wd) and wd >= 0):
                raise UsageError(f"--weight-decay must be a finite number >= 0, got {self.weight_decay}")
            object.__setattr__(self, "weight_decay", wd)
        if not (math.isfinite(self.kfac_damping) and self.kfac_damping > 0):
            raise UsageError(f"--kfac-damping must be a positive number, got {self.kfac_damping}")
        if self.preconditioner != "none" and (self.solver == "exact" or self.damping):
            raise UsageError("--preconditioner works with the iterative solvers and without --damping")
        if self.memory_budget is not None and not (math.isfinite(self.memory_budget) and self.memory_budget > 0):
            raise UsageError(f"--memory-budget must be a positive number of bytes, got {self.memory_budget}")
        if self.hessian_samples <= 0:
            raise UsageError(f"--hessian-samples must be positive, got {self.hessian_samples}")
        if self.gradient_samples < 0:
            raise UsageError(f"--gradient-samples must be 0 (all) or positive, got {self.gradient_samples}")
        if self.newton_steps is not None and self.newton_steps < 1:
            raise UsageError(f"--newton-steps must be at least 1, got {self.newton_steps}")
        if self.scales is not None:
            if not self.scales or not all(math.isfinite(s) for s in self.scales):
                raise UsageError("scales must be finite numbers")
            object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

    def solver_options(self) -> SolverOptions:
        return SolverOptions(solver=self.solver, tol=self.tol, max_iter=self.max_iter, damping=self.damping,
                             recurrence_dtype=torch.float64 if self.recurrence == "float64" else None)


def resolve_weight_decay(args: UnlearnArgs, trained: Optional[float]) -> float:
    if args.weight_decay == "auto":
        if trained is None:
            raise UsageError("--weight-decay auto: the model records no training weight decay; pass a number")
        return float(trained)
    return float(args.weight_decay)


def hessian_data(task: Task, data: Data, args: UnlearnArgs):
    """The data GIF's Hessian is of: all the training data, or what remains without the forget set."""
    return task.training(data) if args.hessian_data == "all" else task.remaining(data)


class InfluenceMethod(Method):
    """gif / fif / pif / if / grad (see the module docstring)."""

    Args = InfluenceArgs

    def __init__(self, name: str, own_targets: bool = False) -> None:
        self.name = name
        # gif aims at the task's own target at a stationary point (a class: its masked outputs); the
        # paper's estimators and the first-order baseline keep the paper's one step there
        self.own_targets = own_targets

    def check(self, args: UnlearnArgs, ctx: ModelContext) -> None:
        resolve_weight_decay(args, ctx.weight_decay)  # --weight-decay auto on a model that records none

    def unlearn(self, model: nn.Module, task: Task, data: Data, args: UnlearnArgs, rt: Runtime,
                ctx: ModelContext) -> MethodOutcome:
        import time

        start = time.perf_counter()
        phases = Phases()
        weight_decay = resolve_weight_decay(args, ctx.weight_decay)
        target = task.target(data)
        pool = hessian_data(task, data, args)
        retain = task.retain(data)
        rt.report("select", 0, None, f"{args.criterion} {args.ratio:g}")
        with phases("select"):
            selection = None if self.name == "if" else select(model, target, args, rt, len(pool))
        J = None if selection is None else selection.J
        with phases("stationarity"):
            rt.report("stationarity", 0, None, "gradient coherence")
            g0 = target_gradient(model, target, len(pool), rt)
            measured = gradient_coherence(model, task.training(data), args.seed, rt, weight_decay)
            first_record = stationarity_record(measured, g0, len(pool))
        # steps from the model: at a stationary point the task's target (the paper's one step, or steps toward
        # a class's masked outputs), re-linearised steps on the retained objective off it
        at_optimum = task.target_at_optimum if self.own_targets else "forget"
        aim_at = resolve_target(args.target, measured["stationary"], 1, at_optimum)
        one = args.target == "auto" and measured["stationary"] and aim_at == "forget"
        most = 1 if one else step_cap(args.newton_steps, aim_at)
        criterion = args.scale_criterion or task.target_criteria.get(aim_at)  # the criterion that fits the target
        given = args.scales is not None and len(args.scales) == 1  # a given scale: nothing to choose
        scorer, unedited = None, None
        if not given:
            with phases("sweep"):
                scorer = task.scorer(criterion, data, model, rt, SWEEP_ACCURACY_ERROR, args.seed)
                unedited = {"scale": 0.0, **scored(scorer, model)}
        current, total, steps, all_rows, stopped, aim = model, None, [], [], None, None
        first: Optional[InfluenceRun] = None
        seconds = 0.0
        for k in range(1, most + 1):
            mode = resolve_target(args.target, measured["stationary"], k, at_optimum)
            with phases("gradients"):
                if mode == "masked":  # toward the unedited model's masked outputs, held fixed over the steps
                    if aim is None:
                        aim = masked_outputs(model, target.split, rt)
                    g, G = masked_target_gradient(current, target, aim, len(pool), rt), None
                    record = {**first_record, "target": mode} if k == 1 else {"target": mode}
                elif k == 1 and mode != "remaining":  # measured above, at the same weights
                    g, record = g0, {**first_record, "target": mode}
                    G = None
                else:
                    g, G, record = gradients(current, target, len(pool), retain, args, rt, weight_decay)
                    record["target"] = mode
                    if k == 1:
                        record["coherence"] = {key: first_record[key] for key in COHERENCE_KEYS}
            # the Newton step's second half for `remaining`: H delta_c = -(g + G), taken at factor 1; both
            # solves share one Hessian sample
            wanted = [(g, record)] + ([(-(g + G), record)] if mode == "remaining" else [])
            t0 = time.perf_counter()
            solved = influences(current, J, target, pool, args, rt, weight_decay, wanted)
            phases.add("hessian_sample", solved[0].hessian_seconds)
            phases.add("solve", time.perf_counter() - t0 - solved[0].hessian_seconds)
            run, correction = solved[0], (solved[1] if len(solved) > 1 else None)
            J = run.J
            seconds += sum(r.seconds for r in solved)
            start_at = current if correction is None else edited_copy(current, J, correction.delta, 1.0)
            before = unedited  # the model this step starts from, as scored (the previous step's choice)
            with phases("sweep"):
                if given:
                    scale, rows, best = args.scales[0], [], None
                else:
                    scale, rows = sweep_scales(start_at, J, run.delta, args.scales, scorer, rt,
                                               unedited=before if k == 1 else None)
                    best = next(r for r in rows if r["scale"] == scale)
                factor = 1.0
                if correction is not None and best is not None:
                    # the correction's factor: 1 (the Newton step) unless less of it scores better on validation
                    for f in CORRECTION_FACTORS:
                        row = {"scale": scale, "correction": f, **scored(scorer, edited_copy(
                            edited_copy(current, J, correction.delta, f), J, run.delta, scale))}
                        rows.append(row)
                        if best_row([best, row]) is row:  # a tie keeps the Newton step
                            best, factor = row, f
            step_delta = scale * run.delta if correction is None else scale * run.delta + factor * correction.delta
            all_rows += [{**r, "step": k} for r in rows] if most > 1 else rows
            # the solves' statistics without their timings: the influence file is the same bytes on a rerun
            entry = {"target": mode, "scale": scale, "correction": factor if correction is not None else None,
                     "stats": run.info["stats"],
                     "correction_stats": correction.info["stats"] if correction is not None else None,
                     "stationarity": record}
            if k > 1 and not improves(best, before):
                stopped = f"step {k} did not improve the validation criterion"
                steps.append({**entry, "taken": False})
                break
            steps.append({**entry, "taken": True})
            unedited = best
            first = first or run
            total = step_delta if total is None else total + step_delta
            current = edited_copy(current, J, step_delta, 1.0)
            if given and k < most:  # nothing chooses whether a further step helps: one step
                stopped = "a given scale: one step (further steps are taken only when validation chooses them)"
                break
        assert first is not None and total is not None
        chosen = unedited  # the last taken step's row (None with a given scale)
        if fallback_needed(args, aim_at, chosen):  # no masked step forgot the class and kept the rest
            return self.fallback(model, task, data, args, rt, ctx, all_rows, time.perf_counter() - start, phases)
        if most == 1 and steps[0]["target"] in ("forget", "masked"):  # one vector and its scale (the paper's edit)
            hyper = {"scale": steps[0]["scale"]}
            run = first
        else:
            run = combined(first, total, steps, stopped, seconds)
            hyper = {"scale": 1.0, "steps": len([s for s in steps if s["taken"]]),
                     "step_scales": [s["scale"] for s in steps if s["taken"]]}
            if any(s["correction"] is not None for s in steps):
                hyper["corrections"] = [s["correction"] for s in steps if s["taken"]]
        edited = edited_copy(model, run.J, run.delta, hyper["scale"])
        artifacts = {"selection": selection, "influence": run}
        summary = {"phases": phases.as_dict(), "decision": decision(args.target, measured, most, aim_at),
                   "criterion": None if given else task.criterion(criterion)}
        if chosen is not None and not chosen.get("feasible", True):  # said, never silent
            summary["warnings"] = [infeasible_warning(self.name, task.criterion(criterion), len(all_rows))]
        return MethodOutcome(edited, hyper, all_rows, {k: v for k, v in artifacts.items() if v is not None},
                             time.perf_counter() - start, summary)

    def fallback(self, model: nn.Module, task: Task, data: Data, args: UnlearnArgs, rt: Runtime, ctx: ModelContext,
                 tried: list, seconds: float, phases: Phases) -> MethodOutcome:
        """The paper's step with the task's own criterion, after the steps toward the masked outputs
        found no scale that meets the match criterion's bounds on validation (classes that share their
        boundaries, or a validation split so small that one image is more than the accuracy slack); the
        decision line says so and the rows tried are kept, marked with their target."""
        outcome = self.unlearn(model, task, data, args.replace(target="forget", newton_steps=1), rt, ctx)
        said = (f"no step toward the masked outputs met the match criterion's bounds on validation "
                f"({len(tried)} scales tried): the paper's one step instead")
        before, after = phases.as_dict(), outcome.summary["phases"]
        summary = {**outcome.summary, "decision": said,
                   "phases": {k: before.get(k, 0.0) + after.get(k, 0.0) for k in {**before, **after}}}
        rows = [{**r, "target": "masked"} for r in tried] + outcome.search
        return MethodOutcome(outcome.edited, outcome.hyper, rows, outcome.artifacts, outcome.seconds + seconds,
                             summary)

    @property
    def selects(self) -> bool:
        """Whether it edits a chosen J (``if`` edits every parameter)."""
        return self.name != "if"

    @property
    def compared(self) -> bool:  # gif compare's default grid: the methods that select J
        return self.selects

    def grid(self, args: UnlearnArgs, criteria: tuple, ratios: tuple) -> list[UnlearnArgs]:
        if not self.selects:  # every parameter: no J to choose
            return [args.replace(criterion="all", ratio=1.0)]
        return super().grid(args, criteria, ratios)

    def report(self, outcome: MethodOutcome) -> MethodReport:
        """The solve's record (report.json's ``influence``), the solver line and the memory note,
        the stationarity caution, and J's criterion and size."""
        out = super().report(outcome)
        run, selection = outcome.artifacts.get("influence"), outcome.artifacts.get("selection")
        if run is None:
            return out
        info = run.info
        record = {"stats": run.stats, "hessian": info.get("hessian"), "device": info.get("device"),
                  "stationarity": info.get("stationarity"), "seconds": run.seconds}
        if "preconditioner" in info:
            record["preconditioner"] = info["preconditioner"]
        if "steps" in info:
            record.update({k: info[k] for k in ("steps", "steps_taken", "stopped")})
        out.record = {"influence": record}
        out.lines = [line for line in (hvp_note({**(info.get("hessian") or {}), **run.environment}),
                                       solver_line(run.stats)) if line]
        caution = stationarity_warning(info.get("stationarity"))
        out.warnings = ([caution] if caution else []) + out.warnings
        if selection is not None:
            out.describe = [f"{selection.criterion} {100 * selection.ratio:g}%"]
        out.selected = run.J.size
        return out

    def files(self, outcome: MethodOutcome, folder: Path, loaded, task: Task, args: UnlearnArgs):
        """mask.json (when J was selected) and influence.safetensors; the edit links to both."""
        from .files import influence_links, write_influence_file, write_mask_file

        paths: dict[str, Path] = {}
        mask_path = None
        selection, run = outcome.artifacts.get("selection"), outcome.artifacts["influence"]
        if selection is not None:
            mask_path = folder / "mask.json"
            write_mask_file(mask_path, selection, args, task.describe(), loaded)
            paths["mask"] = mask_path
        infl_path = folder / "influence.safetensors"
        imeta = write_influence_file(infl_path, run, loaded, mask_path)
        paths["influence"] = infl_path
        return paths, influence_links(infl_path, imeta, run.J)

    def verify(self, base, edited, edit: dict, folder: Path, given: dict) -> Verified:
        from .verify import verify_influence_edit

        return verify_influence_edit(base, edited, edit, folder, given)


CORRECTION_FACTORS = (0.0, 0.5)  # tried besides 1 for --target remaining's stationarity correction
SWEEP_ACCURACY_ERROR = 0.0025  # the scale search scores as many validation images as this standard error needs
COHERENCE_KEYS = ("coherence", "threshold", "standard_error", "samples", "stationary")


def solver_line(stats: Optional[dict]) -> Optional[str]:
    if not stats or stats.get("solver") in (None, "none"):
        return None
    s = stats
    extra = f", cond. est. {s['cond_estimate']:.2e}" if s.get("cond_estimate") else ""
    line = (f"{s['solver']}: {s['iterations']} iterations, {s['hvp_products']} HVPs, "
            f"rel. residual {s['final_relative_residual']:.2e}{extra}, "
            + ("converged" if s["converged"] else f"NOT converged ({s['message']})"))
    for w in s.get("warnings") or []:
        line += f"; {w}"
    return line


def hvp_note(hessian: Optional[dict]) -> Optional[str]:
    if hessian and hessian.get("hvp_mode_requested") == "auto":
        need, budget = hessian["graph_bytes_estimate"], hessian["graph_budget_bytes"]
        verdict = "keeping them (retain)" if hessian["hvp_mode"] == "retain" else "recomputing them (recompute)"
        return f"hvp-mode auto: first-order graphs need ~{need / 2**20:.0f} MiB, budget {budget / 2**20:.0f} MiB: {verdict}"
    return None


def decision(requested: str, measured: dict, steps: int, aim_at: str = "forget") -> str:
    """One line: what the stationarity measurement decided (printed, and recorded in report.json)."""
    where = (f"gradient coherence {measured['coherence']:.3f} {'<=' if measured['stationary'] else '>'} "
             f"{measured['threshold']:g} on {measured['samples']} training samples")
    if requested != "auto":
        return f"--target {requested}, at most {steps} step(s) ({where})"
    if measured["stationary"] and aim_at == "masked":
        return f"at a stationary point ({where}): up to {steps} steps toward the outputs with the class masked"
    if measured["stationary"]:
        return f"at a stationary point ({where}): the paper's one step"
    return f"off a stationary point ({where}): up to {steps} Newton steps on the retained data"


def fallback_needed(args: UnlearnArgs, aim_at: str, chosen: Optional[dict]) -> bool:
    """Whether the default's steps toward the masked outputs give way to the paper's step: after the
    last step the chosen scale still misses the criterion's bounds, and neither the target nor the
    criterion was the user's choice."""
    return (args.target == "auto" and aim_at == "masked" and args.scale_criterion is None and chosen is not None
            and not chosen.get("feasible", True))


def improves(best: Optional[dict], before: Optional[dict]) -> bool:
    """Whether a step's best row scores better on validation than the model it started from."""
    return best is None or before is None or rank(best) > rank(before)


def combined(first: InfluenceRun, total: torch.Tensor, steps: list, stopped: Optional[str],
             seconds: float) -> InfluenceRun:
    """Every step's edit summed into one delta, applied with scale 1: ``gif apply --scale 1`` and
    ``gif verify`` re-derive it from the base model as they do a one-step edit."""
    def products(s: dict) -> int:
        return s["stats"].get("hvp_products", 0) + ((s["correction_stats"] or {}).get("hvp_products", 0))

    stats = {**first.stats, "hvp_products": sum(products(s) for s in steps),
             "iterations": sum(s["stats"].get("iterations", 0) + (s["correction_stats"] or {}).get("iterations", 0)
                               for s in steps),
             "converged": all(s["stats"].get("converged", True) and (s["correction_stats"] or {}).get("converged", True)
                              for s in steps)}
    info = {**first.info, "stats": {**first.info["stats"], **{k: stats[k] for k in ("hvp_products", "iterations",
                                                                                    "converged")}},
            "steps": steps, "steps_taken": len([s for s in steps if s["taken"]]), "stopped": stopped,
            "combined": "delta is the sum of every step's scale x delta (+ correction): apply it with scale 1"}
    return InfluenceRun(total, first.J, info, seconds, stats, first.environment)
