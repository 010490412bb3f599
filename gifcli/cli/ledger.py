"""gif ledger create | forget | status | retrain | verify | export: deletion requests over time."""
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from .app import Bars, app, handled, out, say, single_process
from .options import ALL, unlearn_args, with_options
from .shared import BATCH, BatchSize, DataDir, Deterministic, Device, Workers, pct, rt_for

ledger_app = typer.Typer(help="Deletion requests over time: a ledger of edits, a budget that says when to retrain, "
                              "one verified chain.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(ledger_app, name="ledger")

LedgerOpt = Annotated[Path, typer.Option("--ledger", help="The ledger file (SQLite; its models live in "
                                                          "LEDGER.models/ beside it).")]


@ledger_app.command("create")
@handled
def ledger_create(
    ledger: LedgerOpt,
    model: Annotated[Path, typer.Option(help="The base checkpoint (made by gif train: it records its recipe).")],
    budget: Annotated[float, typer.Option(help="Retrain when the budget used reaches this (1.0: the first "
                                               "diagnostic at its limit; see docs/methods.md).")] = 1.0,
) -> None:
    """Make a ledger from a base checkpoint and its training recipe."""
    single_process("ledger create")
    from ..pipelines.ledger import Ledger

    lg = Ledger.create(ledger, model, budget)
    say(f"wrote {ledger}: base {model} (weights {lg.head().sha[:12]}...), models in {lg.store}")


@ledger_app.command("forget")
@handled
@with_options(ALL)
def ledger_forget(
    ledger: LedgerOpt,
    forget: Annotated[str, typer.Option(help="The request's training samples: a forget-set file, an index list, "
                                             "or -.")],
    request: Annotated[str, typer.Option(help="The request's id (unique in the ledger).")],
    model: Annotated[Optional[Path], typer.Option(help="Refuse unless this checkpoint is the ledger's head.")] = None,
    device: Device = "auto",
    batch_size: BatchSize = BATCH,
    workers: Workers = 0,
    data_dir: DataDir = None,
    deterministic: Deterministic = False,
    uargs: Any = None,
) -> None:
    """Forget a request against the head with any registered method; every sample forgotten so far is
    left out of the edit's data. A second process waits for the first."""
    single_process("ledger forget")
    from ..core.checkpoints import load_model
    from ..data.forget import read_forget
    from ..pipelines.ledger import Ledger

    lg = Ledger(ledger)
    fs = read_forget(forget)
    expect = load_model(model).sha if model is not None else None
    args = unlearn_args(uargs)
    with Bars() as bars:
        rt = rt_for(device, batch_size, workers, bars, deterministic)
        event = lg.forget(fs, request, args, rt, data_dir, expect)
    d = event.body["diagnostics"]
    say(f"row {event.id}: request {request!r}, {event.body['forget']['count']} samples forgotten by {args.method} "
        f"in {event.body['seconds']:.1f} s; budget used {d['budget_used']:.2f} of {lg.budget:g} "
        f"(forgotten share {d['parts']['forgotten_share']:.2f}, validation drift {d['parts']['validation_drift']:.2f}, "
        f"coherence {d['parts']['coherence']:.2f})")
    if d["budget_used"] >= lg.budget:
        say(f"the budget is spent: retrain (gif ledger retrain --ledger {ledger})")


@ledger_app.command("status")
@handled
def ledger_status(
    ledger: LedgerOpt,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the status as JSON (- for "
                                                                     "stdout).")] = None,
) -> None:
    """The chain as a table, the samples forgotten, the budget used, and a recommendation."""
    from ..io.files import STDIO, write_json
    from ..pipelines.ledger import Ledger

    if str(json_path) == STDIO:
        out.to_stderr()
    st = Ledger(ledger).status()
    table = Table(title=Text(f"ledger {ledger}"))
    for c in ("row", "kind", "request", "samples", "method", "seconds", "budget used", "val. acc", "weights"):
        table.add_column(c, justify="right" if c in ("row", "samples", "seconds", "budget used", "val. acc") else "left")
    for e in st.events:
        d = e.body.get("diagnostics") or {}
        table.add_row(str(e.id), e.kind, e.request or "", str(len(e.indices)) if e.kind == "edit" else "",
                      e.body.get("method", ""), f"{e.body['seconds']:.1f}" if "seconds" in e.body else "",
                      f"{d['budget_used']:.2f}" if "budget_used" in d else "",
                      pct(d.get("validation_accuracy")) if d else "", e.sha[:12])
    out.print(table)
    say(f"{st.forgotten} samples forgotten, {st.since_trained} since the last trained model; {st.recommendation}")
    if json_path:
        write_json(json_path, {"ledger": st.path, "forgotten": st.forgotten, "since_trained": st.since_trained,
                               "budget_used": st.budget_used, "budget": st.budget, "recommendation": st.recommendation,
                               "events": [{"row": e.id, "kind": e.kind, "parent": e.parent, "request": e.request,
                                           **{k: v for k, v in e.body.items() if k != "forget"},
                                           "samples": len(e.indices)} for e in st.events]})


@ledger_app.command("retrain")
@handled
def ledger_retrain(
    ledger: LedgerOpt,
    device: Device = "auto",
    workers: Workers = 0,
    data_dir: DataDir = None,
) -> None:
    """Train the recipe without every forgotten sample: a retrain row, and the budget starts again."""
    single_process("ledger retrain")
    from ..pipelines.ledger import Ledger

    lg = Ledger(ledger)
    event = lg.retrain(rt_for(device, BATCH, workers), data_dir)
    say(f"row {event.id}: retrained on {event.body['trained_on']} samples without the "
        f"{event.body['forgotten']['count']} forgotten, in {event.body['seconds']:.0f} s")


@ledger_app.command("verify")
@handled
def ledger_verify(ledger: LedgerOpt) -> None:
    """Check every link from its parent: rows, checkpoints, re-derived edits, the forgotten set; exit 1 at
    the first broken link."""
    from ..pipelines.ledger import Ledger

    v = Ledger(ledger).verify()
    note = f"; not checked: {len(v.unchecked)} ({v.unchecked[0]}...)" if v.unchecked else ""
    say(f"verified {ledger}: {v.checked[0]}; {len(v.checked) - 1} edit checks{note}")


@ledger_app.command("export")
@handled
def ledger_export(
    ledger: LedgerOpt,
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the JSON (- for stdout).")],
) -> None:
    """JSON an auditor reads: each request, its time, the model versions that carry it and those that no
    longer do."""
    from ..io.files import STDIO, write_json
    from ..pipelines.ledger import Ledger

    if str(out_path) == STDIO:
        out.to_stderr()
    doc = Ledger(ledger).export()
    write_json(out_path, doc)
    say(f"wrote {out_path}: {len(doc['requests'])} requests, {len(doc['versions'])} model versions")
