"""gif evaluate: metrics of a model, gaps to a retrained one, and the gates a CI job checks."""
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app, handled, out, say
from .shared import (BATCH, DEFAULT_MODEL, BatchSize, DataDir, DatasetOpt, Device, ModelOpt, Workers, forget_task, load,
                     metrics_table, pct, rt_for)


@app.command("evaluate")
@handled
def evaluate_cmd(
    model: ModelOpt = Path(DEFAULT_MODEL),
    forget_label: Annotated[Optional[int], typer.Option(help="Forgotten class: its test images are the forget set.")] = None,
    forget: Annotated[Optional[str], typer.Option(help="Forgotten training samples (forget-set file, index list or -).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON (- for stdout).")] = None,
    junit: Annotated[Optional[Path], typer.Option(help="Also write the gates as JUnit XML (one test case per "
                                                       "threshold) for a CI system's test view.")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="Another checkpoint (e.g. the base model) to show beside it.")] = None,
    retrained: Annotated[Optional[Path], typer.Option(help="A model trained without the forget set: gaps, Avg. Gap, "
                                                           "agreement and KL on the forget set.")] = None,
    min_test_acc: Annotated[Optional[float], typer.Option(help="Exit 1 if test accuracy (%) is below this.")] = None,
    max_forget_acc: Annotated[Optional[float], typer.Option(help="Exit 1 if forget accuracy (%) is above this.")] = None,
    max_gap: Annotated[Optional[float], typer.Option(help="Exit 1 if the Avg. Gap to --retrained (points) is above this.")] = None,
    mia: Annotated[bool, typer.Option(help="Report the membership-inference share (an extra pass over the data).")] = True,
    dataset: DatasetOpt = None,
    device: Device = "auto",
    batch_size: BatchSize = BATCH,
    workers: Workers = 0,
    data_dir: DataDir = None,
) -> None:
    """Loss and accuracy on the forget set and test data, MIA, gaps to a retrained model; gates for CI."""
    from ..core.checkpoints import load_model
    from ..io.files import STDIO, write_json
    from ..pipelines.evaluate import Thresholds, evaluate_report

    if str(json_path) == STDIO:
        out.to_stderr()
    rt = rt_for(device, batch_size, workers)
    loaded, data = load(model, dataset, data_dir)
    task = forget_task(data, forget_label, forget, required=False)
    thresholds = Thresholds(min_test_acc, max_forget_acc, max_gap)
    report = evaluate_report(loaded, data, task, rt, load_model(baseline) if baseline else None,
                             load_model(retrained) if retrained else None, thresholds, mia)
    rows = {str(model): report}
    for key in ("baseline", "retrained"):
        if key in report:
            rows[report[key]["model"]] = report[key]
    if rt.dist.is_main:
        out.print(metrics_table(f"evaluate on {data.spec.name}", rows))
        if "retrained" in report and report["retrained"].get("avg_gap") is not None:
            r = report["retrained"]
            say(f"Avg. Gap to the retrained model: {100 * r['avg_gap']:.2f} points; agreement on the forget set "
                f"{pct(r['agreement_forget'])}, KL(retrained || model) there {r['kl_forget']:.4f}")
        if json_path:
            write_json(json_path, report)
        if junit:
            from ..io.junit import write_junit

            write_junit(junit, report)
    if report["violations"]:
        from ..errors import GateFailed

        raise GateFailed("threshold violated: " + "; ".join(report["violations"]))
