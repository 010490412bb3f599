"""Deletion requests over time: one SQLite ledger of a model's edits, a budget that says when to
retrain, and one verified chain.

A ledger is one SQLite file (Python's own ``sqlite3``) made from a base checkpoint and the recipe
it records. Every row is an event: the ``base``, an ``edit`` (a request forgotten by any registered
method) or a ``retraining`` (the recipe without every sample forgotten so far). Rows are never
rewritten (triggers refuse UPDATE and DELETE) and each carries the sha256 of its content and of its
parent's row, so an edited row breaks the chain; ``parent`` is UNIQUE, so the chain stays one line.
The head is the newest row. Models live beside the ledger in ``NAME.models/``: each edit's run
folder (the method's files, ``edited.safetensors``, ``report.json``) and each retrained model.

Every later edit's data excludes every sample forgotten so far: the ledger hands the method a
copy of the data whose training and validation splits no longer hold them, so they are in no
Hessian sample, no validation score and no gradient.

Two processes forgetting at once: the second waits (an flock on ``NAME.lock`` held from reading
the head to appending the row), then edits the new head.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch

from ..core.args import Runtime, UnlearnArgs
from ..core.checkpoints import Loaded, load_model
from ..core.methods import METHODS, Verified
from ..core.passes import evaluate
from ..core.tasks import SampleRemoval
from ..data.datasets import Data
from ..data.forget import ForgetSet, resolve
from ..errors import ChainBroken, InputFileError, UsageError
from ..io.files import indices_sha256, json_sha256, provenance, sha256_file
from .inputs import load_data_for

FORMAT, VERSION = "gif-ledger", 1
# the budget's parts, each divided by its limit; the budget used is the largest (1.0: retrain)
SHARE_LIMIT = 0.05  # samples forgotten since the last trained model, as a share of its training split
DRIFT_LIMIT = 0.5  # validation accuracy lost against the last trained model, in points
COHERENCE_LIMIT = 0.05  # the head's gradient coherence on the remaining data (the stationarity threshold)
DEFAULT_BUDGET = 1.0
RETRAINING = "retraining"  # the kind of a row whose model was trained again without every forgotten sample

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('base', 'edit', 'retraining')),
    parent INTEGER UNIQUE REFERENCES events (id),
    request TEXT UNIQUE,
    body TEXT NOT NULL,
    row_sha256 TEXT NOT NULL
);
CREATE TRIGGER no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'ledger rows are never rewritten'); END;
CREATE TRIGGER no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'ledger rows are never removed'); END;
"""


@dataclass
class Event:
    """One row: what happened, to which model, and the model it made."""

    id: int
    kind: str
    parent: Optional[int]
    request: Optional[str]
    body: dict  # checkpoint, checkpoint_sha256, parent_sha256, time, seconds, method, args, forget, diagnostics...
    row_sha256: str

    @property
    def checkpoint(self) -> str:
        return self.body["checkpoint"]

    @property
    def sha(self) -> str:
        return self.body["weights_sha256"]

    @property
    def indices(self) -> list[int]:
        return list((self.body.get("forget") or {}).get("indices", []))


@dataclass
class LedgerStatus:
    """The chain, what it has forgotten, the budget used and what to do next."""

    path: str
    events: list[Event]
    forgotten: int
    since_trained: int
    budget_used: Optional[float]
    budget: float
    recommendation: str


def row_hash(kind: str, parent: Optional[int], request: Optional[str], body: dict, parent_hash: str) -> str:
    """A row's sha256: its content and its parent's row sha256 (so a changed row breaks every later one)."""
    return json_sha256({"kind": kind, "parent": parent, "request": request, "body": body, "after": parent_hash})


def indices_hash(indices) -> str:
    return indices_sha256(sorted(indices))


class Ledger:
    """A ledger file (see the module docstring). Open one with ``Ledger(path)``; make one with
    :meth:`create`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputFileError(f"ledger {self.path} not found (make one with gif ledger create)")
        try:
            with self._db() as db:
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise InputFileError(f"{self.path} is not a gif ledger ({exc})") from None
        if meta.get("format") != FORMAT:
            raise InputFileError(f"{self.path} is not a gif ledger (format {meta.get('format')!r})")
        if int(meta.get("version", 0)) != VERSION:
            raise InputFileError(f"{self.path}: ledger version {meta.get('version')} is not {VERSION}")
        self.meta = meta
        self.budget = float(meta.get("budget", DEFAULT_BUDGET))
        self._data: dict[tuple, Data] = {}  # the data of this ledger's models, read once per process

    # -- storage ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=600, isolation_level=None)
        try:
            yield db
        finally:
            db.close()

    @property
    def store(self) -> Path:
        return self.path.with_name(self.path.name + ".models")

    def resolve_path(self, rel: str) -> Path:
        return self.path.parent / rel

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One writer at a time: the second waits here (the lock is released if a process dies)."""
        import fcntl

        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def events(self) -> list[Event]:
        try:
            with self._db() as db:
                rows = db.execute("SELECT id, kind, parent, request, body, row_sha256 FROM events ORDER BY id").fetchall()
        except sqlite3.DatabaseError as exc:
            raise InputFileError(f"ledger {self.path} cannot be read ({exc})") from None
        out = []
        for r in rows:
            try:
                body = json.loads(r[4])
            except ValueError:
                raise ChainBroken(f"ledger {self.path}: row {r[0]} is not readable JSON") from None
            out.append(Event(r[0], r[1], r[2], r[3], body, r[5]))
        if not out:
            raise InputFileError(f"ledger {self.path} has no base row")
        return out

    def head(self) -> Event:
        return self.events()[-1]

    def _append(self, kind: str, request: Optional[str], body: dict) -> Event:
        """Append a row after the head, inside one immediate transaction."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                last = db.execute("SELECT id, row_sha256 FROM events ORDER BY id DESC LIMIT 1").fetchone()
                parent, parent_hash = (last[0], last[1]) if last else (None, "")
                digest = row_hash(kind, parent, request, body, parent_hash)
                cur = db.execute("INSERT INTO events (kind, parent, request, body, row_sha256) VALUES (?, ?, ?, ?, ?)",
                                 (kind, parent, request, json.dumps(body, sort_keys=True), digest))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return Event(cur.lastrowid, kind, parent, request, body, digest)

    # -- making one ------------------------------------------------------------------------------
    @staticmethod
    def create(path: str | Path, base: str | Path, budget: float = DEFAULT_BUDGET) -> "Ledger":
        """A new ledger whose base row is the checkpoint ``base`` (copied into the ledger's store)."""
        path = Path(path)
        if path.exists():
            raise UsageError(f"{path} exists: a ledger is made once (open it, or name another file)")
        if not (budget > 0):
            raise UsageError(f"--budget must be positive, got {budget}")
        loaded = load_model(base)
        recipe = loaded.meta.get("train_config")
        if not recipe:
            raise UsageError(f"{base} records no training recipe (imported weights): a ledger needs one to retrain")
        store = path.with_name(path.name + ".models")
        store.mkdir(parents=True, exist_ok=True)
        target = store / "base.safetensors"
        shutil.copyfile(base, target)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.executescript(SCHEMA)
                meta = {"format": FORMAT, "version": str(VERSION), "budget": repr(float(budget)),
                        "recipe": json.dumps(recipe, sort_keys=True), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                              time.gmtime())}
                db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
                body = {"checkpoint": os.path.relpath(target, path.parent), "checkpoint_sha256": sha256_file(target),
                        "weights_sha256": loaded.sha, "source": str(base), "time": meta["created"],
                        "forgotten": {"count": 0, "sha256": indices_hash([])}, "provenance": provenance(kind="ledger")}
                digest = row_hash("base", None, None, body, "")
                db.execute("INSERT INTO events (kind, parent, request, body, row_sha256) VALUES ('base', NULL, NULL, ?, ?)",
                           (json.dumps(body, sort_keys=True), digest))
            finally:
                db.close()
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            target.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                store.rmdir()
            raise
        return Ledger(path)

    # -- what it holds ---------------------------------------------------------------------------
    def forgotten(self, events: Optional[list[Event]] = None) -> dict[int, str]:
        """Every sample forgotten so far -> the request that forgot it."""
        out: dict[int, str] = {}
        for e in events or self.events():
            for i in e.indices:
                out[i] = e.request or ""
        return out

    def load(self, event: Event) -> Loaded:
        """The event's model, checked against the sha256 its row records."""
        path = self.resolve_path(event.checkpoint)
        if not path.is_file():
            raise ChainBroken(f"row {event.id}: its checkpoint {path} is missing")
        if sha256_file(path) != event.body["checkpoint_sha256"]:
            raise ChainBroken(f"row {event.id}: {path} no longer matches the sha256 its row records")
        return load_model(path)

    def data(self, loaded: Loaded, data_dir: Optional[str], forgotten: Optional[dict] = None) -> Data:
        """The model's data less every sample forgotten so far (in its training and validation splits)."""
        key = (json.dumps(loaded.meta.get("dataset"), sort_keys=True), data_dir)
        if key not in self._data:
            self._data[key] = load_data_for(loaded, None, data_dir)
        data = self._data[key]
        gone = torch.tensor(sorted(forgotten if forgotten is not None else self.forgotten()), dtype=torch.long)
        if gone.numel() == 0:
            return data
        reduced = copy.copy(data)
        reduced.fit_indices = data.fit_indices[~torch.isin(data.fit_indices, gone)]
        reduced.validation_indices = data.validation_indices[~torch.isin(data.validation_indices, gone)]
        return reduced

    def last_trained(self, events: list[Event]) -> Event:
        return next(e for e in reversed(events) if e.kind in ("base", RETRAINING))

    # -- the budget ------------------------------------------------------------------------------
    def diagnostics(self, head: Loaded, trained: Loaded, data: Data, since: int, rt: Runtime) -> dict:
        """What grows as edits pile up, each against its limit; ``budget_used`` is the largest share."""
        from ..methods.influence.steps import gradient_coherence

        fit_size = int(data.fit_indices.numel()) + since
        share = since / max(fit_size, 1)
        val = data.validation
        acc_head = evaluate(head.model.to(rt.device), val, rt, "validation").accuracy
        acc_trained = evaluate(trained.model.to(rt.device), val, rt, "validation").accuracy
        drift = 100 * (acc_trained - acc_head) if acc_head is not None and acc_trained is not None else 0.0
        coherence = gradient_coherence(head.model.to(rt.device), data.fit, 0, rt)["coherence"]
        parts = {"forgotten_share": share / SHARE_LIMIT, "validation_drift": max(drift, 0.0) / DRIFT_LIMIT,
                 "coherence": coherence / COHERENCE_LIMIT}
        return {"forgotten_since_trained": since, "forgotten_share": share, "validation_accuracy": acc_head,
                "validation_accuracy_trained": acc_trained, "validation_drift_points": drift,
                "coherence": coherence, "parts": parts, "budget_used": max(parts.values()),
                "limits": {"forgotten_share": SHARE_LIMIT, "validation_drift_points": DRIFT_LIMIT,
                           "coherence": COHERENCE_LIMIT}}

    # -- the jobs --------------------------------------------------------------------------------
    def forget(self, forget: ForgetSet, request: str, args: UnlearnArgs, rt: Runtime, data_dir: Optional[str] = None,
               expect_head: Optional[str] = None) -> Event:
        """Forget a request against the head (waits while another process writes); returns its row."""
        from .unlearn import unlearn_to_folder

        if not request or not isinstance(request, str):
            raise UsageError("a request needs an id (--request)")
        with self._writing():
            events = self.events()
            head = events[-1]
            if expect_head is not None and expect_head not in (head.sha, head.body["checkpoint_sha256"]):
                raise UsageError(f"that model is not the ledger's head (row {head.id}, {head.checkpoint})")
            if any(e.request == request for e in events):
                raise UsageError(f"request {request!r} is in the ledger already")
            gone = self.forgotten(events)
            again = [i for i in forget.indices.tolist() if i in gone]
            if again:
                raise UsageError(f"sample {again[0]} was forgotten already (request {gone[again[0]]!r})"
                                 + (f", and {len(again) - 1} more" if len(again) > 1 else ""))
            loaded = self.load(head)
            data = self.data(loaded, data_dir, gone)
            resolved = resolve(forget, data)
            task = SampleRemoval(resolved, args.scale_criterion or "privacy")
            folder = self.store / f"edit-{len(events):05d}-{_safe(request)}"
            if folder.exists():  # left by a process that was killed before its row: no row names it, and we hold the lock
                shutil.rmtree(folder)
            try:
                start = time.perf_counter()
                result, report, _ = unlearn_to_folder(loaded, data, task, args, rt, folder, kind="ledger-edit")
                seconds = time.perf_counter() - start
                edited = folder / "edited.safetensors"
                trained_event = self.last_trained(events)
                trained = self.load(trained_event)
                since = sum(len(e.indices) for e in events if e.id > trained_event.id) + len(forget)
                newly = self.data(loaded, data_dir, {**gone, **{i: request for i in forget.indices.tolist()}})
                edited_loaded = load_model(edited)
                diag = self.diagnostics(edited_loaded, trained, newly, since, rt)
                union = sorted({*gone, *forget.indices.tolist()})
                body = {"checkpoint": os.path.relpath(edited, self.path.parent),
                        "checkpoint_sha256": sha256_file(edited), "weights_sha256": edited_loaded.sha,
                        "parent_sha256": head.sha, "folder": os.path.relpath(folder, self.path.parent),
                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": round(seconds, 3),
                        "method": args.method, "args": args.as_dict(), "hyper": result.outcome.hyper,
                        "forget": {"source": forget.source, "sha256": forget.sha256, "count": len(forget),
                                   "in_training": int(resolved.in_fit.numel()), "indices": forget.indices.tolist()},
                        "forgotten": {"count": len(union), "sha256": indices_hash(union)},
                        "diagnostics": diag, "edited_metrics": report.get("edited")}
                return self._append("edit", request, body)
            except BaseException:  # an interruption or a failure at any point: no run folder without its row
                if not any(e.request == request for e in self.events()):
                    shutil.rmtree(folder, ignore_errors=True)
                raise

    def retrain(self, rt: Runtime, data_dir: Optional[str] = None) -> Event:
        """Train the recipe without every forgotten sample; the budget starts again from this row."""
        from ..config import TrainConfig
        from ..core.checkpoints import edited_meta
        from ..io.checkpoint import save_checkpoint
        from ..models.specs import set_eval
        from ..models.train import train_model

        with self._writing():
            events = self.events()
            head = events[-1]
            base = self.load(events[0])
            gone = self.forgotten(events)
            data = self.data(base, data_dir, gone)
            ctx = base.context()
            cfg = TrainConfig.from_dict(json.loads(self.meta["recipe"]))
            start = time.perf_counter()
            with torch.random.fork_rng(devices=[rt.device] if rt.device.type == "cuda" else []):
                torch.manual_seed(cfg.seed)
                fresh = ctx.build().to(rt.device)
                train_model(fresh, data.fit, cfg, rt.device, None, rt.workers)
            seconds = time.perf_counter() - start
            out = self.store / f"retrain-{len(events):05d}.safetensors"
            reference = next(n for n, m in METHODS.items() if m.reference)  # the method whose edit is a retraining
            meta = edited_meta(base, {}, {"epochs": cfg.epochs, "seed": cfg.seed}, reference, {"forgotten": len(gone)})
            save_checkpoint(out, set_eval(fresh).cpu(), meta)
            union = sorted(gone)
            body = {"checkpoint": os.path.relpath(out, self.path.parent), "checkpoint_sha256": sha256_file(out),
                    "weights_sha256": load_model(out).sha, "parent_sha256": head.sha,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": round(seconds, 3),
                    "trained_on": int(data.fit_indices.numel()),
                    "forgotten": {"count": len(union), "sha256": indices_hash(union)}}
            try:
                return self._append(RETRAINING, None, body)
            except BaseException:
                out.unlink(missing_ok=True)
                raise

    def status(self) -> LedgerStatus:
        events = self.events()
        trained = self.last_trained(events)
        since = sum(len(e.indices) for e in events if e.id > trained.id)
        head = events[-1]
        used = (head.body.get("diagnostics") or {}).get("budget_used") if head.kind == "edit" else 0.0
        if used is None:
            advice = "no budget measured"
        elif used >= self.budget:
            advice = f"retrain: the budget used ({used:.2f}) reached its limit ({self.budget:g})"
        else:
            advice = f"keep editing: budget used {used:.2f} of {self.budget:g}"
        return LedgerStatus(str(self.path), events, len(self.forgotten(events)), since, used, self.budget, advice)

    def verify(self) -> Verified:
        """Every link checked from its parent (exit 1 at the first broken one: a ChainBroken)."""
        from .verify import verify as verify_edit

        v = Verified(str(self.path))
        events = self.events()
        parent_hash, union = "", set()
        for k, e in enumerate(events):
            expected_parent = events[k - 1].id if k else None
            if e.parent != expected_parent:
                raise ChainBroken(f"row {e.id}: its parent is {e.parent}, not the row before it ({expected_parent})")
            if (e.kind == "base") != (k == 0):
                raise ChainBroken(f"row {e.id}: a {e.kind} row {'first' if k == 0 else 'after the base'}")
            if row_hash(e.kind, e.parent, e.request, e.body, parent_hash) != e.row_sha256:
                raise ChainBroken(f"row {e.id} ({e.kind}{' ' + e.request if e.request else ''}) was changed after it "
                                  "was written: its sha256 does not match")
            parent_hash = e.row_sha256
            loaded = self.load(e)  # the checkpoint's bytes and weights against the row
            if k and e.body.get("parent_sha256") != events[k - 1].sha:
                raise ChainBroken(f"row {e.id}: made from weights {str(e.body.get('parent_sha256'))[:12]}..., "
                                  f"not its parent's")
            if e.kind == "edit":
                overlap = union & set(e.indices)
                if overlap:
                    raise ChainBroken(f"row {e.id}: sample {min(overlap)} was forgotten by an earlier request")
                union |= set(e.indices)
                if (loaded.meta.get("edit") or {}).get("base_model_sha256") != events[k - 1].sha:
                    raise ChainBroken(f"row {e.id}: its edited checkpoint records another base than its parent")
                parent_path = self.resolve_path(events[k - 1].checkpoint)
                own = verify_edit(self.resolve_path(e.checkpoint), base=parent_path)
                v.checked += [f"row {e.id} ({e.request}): {c}" for c in own.checked]
                v.unchecked += [f"row {e.id} ({e.request}): {c}" for c in own.unchecked]
            forgotten = e.body.get("forgotten") or {}
            if forgotten.get("count") != len(union) or forgotten.get("sha256") != indices_hash(sorted(union)):
                raise ChainBroken(f"row {e.id}: its forgotten set is not the union of the requests up to it")
        v.checked.insert(0, f"{len(events)} rows in one line, each row's sha256 and checkpoint; the forgotten "
                            f"set ({len(union)} samples) is the union of the requests")
        return v

    def export(self) -> dict:
        """What an auditor reads: each request, when, and the model versions that carry it and not."""
        events = self.events()
        versions = [{"row": e.id, "kind": e.kind, "checkpoint": e.checkpoint, "weights_sha256": e.sha,
                     "time": e.body.get("time")} for e in events]
        requests = []
        for e in events:
            if e.kind != "edit":
                continue
            requests.append({"request": e.request, "time": e.body["time"], "samples": e.body["forget"]["count"],
                             "forget_sha256": e.body["forget"]["sha256"], "method": e.body["method"],
                             "row": e.id, "carried_by": [v["weights_sha256"] for v in versions if v["row"] < e.id],
                             "no_longer_in": [v["weights_sha256"] for v in versions if v["row"] >= e.id]})
        return {"format": "gif-ledger-export", "version": 1, "ledger": str(self.path), "head": versions[-1],
                "versions": versions, "requests": requests, "forgotten": len(self.forgotten(events)),
                "provenance": provenance(kind="ledger-export")}


def _safe(request: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in request)[:40]
    return keep or "request"
