"""Which unlearning method should I use? Every method on four settings, three seeds, against retraining.

Settings on MNIST with the paper's CNN (every model trained with configs/harness/mnist_cnn_short.yaml):

* ``class8``: forget class 8 (scale criterion f1);
* ``random10``: forget a random 10 % of the training set, drawn anew for each seed (privacy);
* ``mislabeled``: 45 % of class 3's training labels flipped to 8, drawn for each seed; the model
  trained on the flipped labels forgets exactly the flipped samples (repair);
* ``backdoor``: the checkerboard trigger on 30 % of the training images relabelled 4 (appendix C);
  the backdoored model forgets the relabelling (backdoor).

Methods: gif, grad, pif, ssd, finetune, neggrad, neggrad+, rl, salun, retrain, and ``unedited``
(doing nothing: the trained model as it is, the floor every edit has to beat). Each chooses its
hyper-parameters on the validation split by the setting's criterion. Each retrained reference is
trained once per setting and seed, cached in ``--work``, and reused. Per row: forget, retain and test accuracy, the entropy
and SVC membership attacks on the forget set, attack success (backdoor), Avg. Gap to the
retrained model of the same seed, seconds and run-time efficiency (seconds / retraining seconds).

    python benchmarks/harness.py --json benchmarks/results/harness.json --md benchmarks/results/harness.md

A method may carry options, as ``label=method:key=value,key=value`` (e.g.
``gif-paper=gif:target=forget,newton_steps=1``): the rows are labelled ``label``; the ablations use this.

``--merge`` adds the rows of ``--methods`` to an existing ``--json`` file (replacing those methods'
rows there, keeping the others and the recorded grid time) and rewrites the summaries and ``--md``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import ROOT, flipped_mnist, log, runtime

from gifcli.config import load_train_config
from gifcli.core.args import UnlearnArgs
from gifcli.core.metrics import agreement, avg_gap, mean_kl
from gifcli.core.run import run
from gifcli.core.tasks import BackdoorRecovery, ClassRemoval, SampleRemoval
from gifcli.data.datasets import DatasetSpec, load_data
from gifcli.data.forget import ForgetSet, make_forget_set, resolve
from gifcli.io.files import provenance, write_json, write_text
from gifcli.pipelines.backdoor import load_backdoor, make_poison_doc, train_backdoor
from gifcli.pipelines.inputs import load_data_for
from gifcli.core.checkpoints import load_model
from gifcli.pipelines.compare import markdown_table, summarise
from gifcli.core.metrics import unlearning_metrics  # noqa: E402
from gifcli.pipelines.evaluate import GAP_KEYS
from gifcli.pipelines.train import run_train

CONFIG = ROOT / "configs" / "harness" / "mnist_cnn_short.yaml"
METHODS = ("gif", "grad", "pif", "ssd", "finetune", "neggrad", "neggrad+", "rl", "salun", "retrain", "unedited")
SETTINGS = ("class8", "random10", "mislabeled", "backdoor")


class Harness:
    def __init__(self, work: Path, data_dir, rt, config: Path = CONFIG):
        self.work, self.data_dir, self.rt = work, data_dir, rt
        self.config = config
        self.cfg = load_train_config(config)
        work.mkdir(parents=True, exist_ok=True)

    def trained(self, name: str, **kw):
        """A cached checkpoint: trained once (with the harness's recipe), then reused."""
        path = self.work / f"{name}.safetensors"
        if not path.exists():
            t = time.perf_counter()
            run_train(kw.pop("cfg", self.cfg), path, self.rt, self.data_dir, **kw)
            log("trained", name, f"{time.perf_counter() - t:.0f} s")
        return load_model(path)

    def setting(self, name: str, seed: int):
        """(base model, data, task, retrained model) of one setting and seed."""
        if name == "class8":
            base = self.trained("clean")
            data = load_data_for(base, None, self.data_dir)
            return base, data, ClassRemoval(8), self.trained(f"class8-retrain-s{seed}", exclude_label=8,
                                                             cfg=self.cfg.replace(seed=seed))
        if name == "random10":
            base = self.trained("clean")
            data = load_data_for(base, None, self.data_dir)
            fs = make_forget_set(data, "random", fraction=0.1, seed=seed)
            retrained = self.trained(f"random10-retrain-s{seed}", exclude=fs, cfg=self.cfg.replace(seed=seed))
            return base, data, SampleRemoval(resolve(fs, data), "privacy"), retrained
        if name == "mislabeled":
            spec, fs = self.flipped(seed)
            cfg = self.cfg.replace(dataset=spec)
            base = self.trained(f"mislabeled-s{seed}", cfg=cfg)
            data = load_data_for(base, None, self.data_dir)
            retrained = self.trained(f"mislabeled-retrain-s{seed}", exclude=fs, cfg=cfg.replace(seed=seed))
            return base, data, SampleRemoval(resolve(fs, data), "repair"), retrained
        if name == "backdoor":
            poison = self.work / "poison.json"
            if not poison.exists():
                write_json(poison, make_poison_doc("mnist", 0.3, 4, 1, self.data_dir))
            doc = json.loads(poison.read_text())
            paths = {k: self.work / f"backdoor-{k}.safetensors" for k in ("base", f"retrain-s{seed}")}
            for key, true in (("base", False), (f"retrain-s{seed}", True)):
                if not paths[key].exists():
                    t = time.perf_counter()
                    train_backdoor(self.cfg.replace(seed=seed if true else 0), poison, paths[key], self.rt,
                                   self.data_dir, true)
                    log("trained backdoor", key, f"{time.perf_counter() - t:.0f} s")
            base, retrained = load_model(paths["base"]), load_model(paths[f"retrain-s{seed}"])
            bd = load_backdoor(doc, self.data_dir, load_data_for(base, None, self.data_dir))
            return base, bd.data, BackdoorRecovery(bd), retrained
        raise SystemExit(f"unknown setting {name}")

    def flipped(self, seed: int):
        """MNIST with 45 % of class 3's training labels flipped to 8 (drawn with ``seed``)."""
        path = self.work / f"mnist_flipped_s{seed}.safetensors"
        pick, _ = flipped_mnist(path, 3, 8, 0.45, seed, self.data_dir)
        spec = f"tensors:{path}"
        data = load_data(DatasetSpec.parse(spec), self.data_dir)
        return spec, ForgetSet(pick, data.record(), {"how": "flipped labels", "seed": seed}, None, "flipped")


def parse_method(text: str) -> tuple[str, str, dict]:
    """``label=method:key=value,...`` -> (label, method, options); a bare name is its own label."""
    import yaml

    label, _, rest = text.partition("=")
    if not rest:
        return text, text, {}
    method, _, opts = rest.partition(":")
    options = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        options[key.replace("-", "_")] = yaml.safe_load(value)
    return label, method, options


def method_specs(text: str) -> list[str]:
    """``--methods``: names separated by commas, or by semicolons once any carries options."""
    return [m for m in text.split(";" if ("=" in text or ";" in text) else ",") if m]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--work", default="/tmp/gif_harness")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--md", default=None)
    ap.add_argument("--merge", action="store_true", help="add these methods' rows to the existing --json file")
    ap.add_argument("--config", default=str(CONFIG), help="training recipe of every model of the grid")
    ap.add_argument("--train-only", action="store_true", help="only train (and cache in --work) the grid's models")
    ap.add_argument("--combine", nargs="*", default=None,
                    help="write --json/--md from these result files (settings run in separate processes)")
    args = ap.parse_args()
    if args.combine:
        parts = [json.loads(Path(f).read_text()) for f in args.combine]
        settings: dict = {}
        for p in parts:
            for k, v in p["settings"].items():
                if k not in settings:
                    settings[k] = {**v, "base_by_seed": {str(v["seeds"][0]): v.get("base")}}
                    continue
                s = settings[k]
                rows = s["rows"] + v["rows"]
                rank = {m: i for i, m in enumerate(dict.fromkeys(r["method"] for r in rows))}
                rows.sort(key=lambda r: (rank[r["method"]], r["seed"]))
                s.update(rows=rows, summary=summarise(rows), seeds=sorted(set(s["seeds"]) | set(v["seeds"])),
                         seconds=s["seconds"] + v["seconds"])
                s["base_by_seed"][str(v["seeds"][0])] = v.get("base")
        out = {"settings": settings,
               "seconds": sum(p.get("seconds", 0.0) for p in parts), "config": parts[0].get("config"),
               "parts": [{"file": f, "seconds": p.get("seconds"), "provenance": p.get("provenance")}
                         for f, p in zip(args.combine, parts)], "provenance": provenance()}
        write_outputs(out, args.json, args.md)
        return
    if args.merge and not (args.json and Path(args.json).exists()):
        raise SystemExit("--merge needs an existing --json file")
    previous = json.loads(Path(args.json).read_text()) if args.merge else None  # read before any write
    rt = runtime()
    h = Harness(Path(args.work), args.data_dir, rt, Path(args.config))
    if args.train_only:
        for name in args.settings.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                h.setting(name, seed)
        log("trained every model of the grid")
        return
    start = time.perf_counter()
    results = {}
    for name in args.settings.split(","):
        setting_start = time.perf_counter()
        rows = []
        for seed in (int(s) for s in args.seeds.split(",")):
            base, data, task, retrained = h.setting(name, seed)
            ref = unlearning_metrics(retrained.model, data, task, rt, svc=True)
            ref_seconds = retrained.meta["train_seconds"]
            for spec in method_specs(args.methods):
                name_of, method, options = parse_method(spec)
                warnings: list = []
                if method == "retrain":
                    metrics, seconds, hyper = ref, ref_seconds, {"epochs": h.cfg.epochs}
                elif method == "unedited":
                    metrics, seconds, hyper = unlearning_metrics(base.model, data, task, rt, svc=True), 0.0, {}
                else:
                    t = time.perf_counter()
                    result = run(task, base.model, data, UnlearnArgs(method=method, seed=seed, **options), rt,
                                 base.context(), report=False)
                    seconds = time.perf_counter() - t
                    metrics, hyper = unlearning_metrics(result.model, data, task, rt, svc=True), result.outcome.hyper
                    warnings = result.outcome.summary.get("warnings", [])
                edited = retrained.model if method == "retrain" else (base.model if method == "unedited" else result.model)
                probe = task.forget_probe(data)  # the forgotten data a retrained model never saw
                outputs_vs = {"agreement_forget": agreement(edited, retrained.model, probe, rt),
                              "kl_forget": mean_kl(retrained.model, edited, probe, rt)}
                row = {"setting": name, "method": name_of, "options": options, "criterion": None, "ratio": None, "seed": seed,
                       "hyper": hyper, "method_seconds": seconds, "selected": None, **metrics, **outputs_vs,
                       "avg_gap": avg_gap(metrics, ref, GAP_KEYS), "rte": seconds / ref_seconds, "warnings": warnings}
                rows.append(row)
                log(name, seed, name_of, f"gap {100 * row['avg_gap']:.2f}",
                    f"agreement {100 * (row['agreement_forget'] or 0):.1f} %", f"{seconds:.0f} s", hyper,
                    *(f"warning: {w}" for w in warnings))
            results[name] = {"rows": rows, "summary": summarise(rows), "seeds": [int(s) for s in args.seeds.split(",")],
                             "base_model": base.path, "base": unlearning_metrics(base.model, data, task, rt, svc=True),
                             "seconds": time.perf_counter() - setting_start}  # training included
            if args.json and not args.merge:  # what is done so far, in case the grid is interrupted
                write_json(args.json, {"settings": results, "partial": True, "provenance": provenance()})
    out = {"settings": results, "seconds": time.perf_counter() - start, "config": str(h.config),
           "provenance": provenance()}
    if args.merge:
        out = merged(previous, out, [parse_method(m)[0] for m in method_specs(args.methods)])
    write_outputs(out, args.json, args.md)
    log(f"done in {(time.perf_counter() - start) / 60:.1f} min")


def write_outputs(out: dict, json_path, md_path) -> None:
    if json_path:
        write_json(json_path, out)
    if md_path:
        text = "".join(f"### {name} ({r['seconds'] / 60:.0f} min)\n\n"
                       + markdown_table({"summary": r["summary"], "seeds": r["seeds"]}) + "\n"
                       for name, r in out["settings"].items())
        write_text(md_path, text + f"Whole grid: {out['seconds'] / 60:.0f} min of process time.\n")


def merged(old: dict, new: dict, methods: list[str]) -> dict:
    """``old`` with the rows of ``methods`` replaced by ``new``'s, in METHODS order; the grid time stays old's."""
    rank = {m: i for i, m in enumerate(METHODS)}
    settings = dict(old["settings"])
    for name, r in new["settings"].items():
        prev = settings.get(name)
        if prev is None:
            settings[name] = r
            continue
        if prev["seeds"] != r["seeds"]:
            raise SystemExit(f"{name}: the file has seeds {prev['seeds']}, this run {r['seeds']}")
        rows = [x for x in prev["rows"] if x["method"] not in methods] + r["rows"]
        rows.sort(key=lambda x: (rank.get(x["method"], len(rank)), x["seed"]))
        settings[name] = {**prev, "rows": rows, "summary": summarise(rows)}
    merges = old.get("merges", []) + [{"methods": methods, "settings": list(new["settings"]),
                                       "seconds": new["seconds"], "provenance": new["provenance"]}]
    return {**old, "settings": settings, "merges": merges}


if __name__ == "__main__":
    main()
