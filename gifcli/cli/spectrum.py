"""gif spectrum: the Hessian's largest eigenvalues (Lanczos)."""
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..parsing import comma_list
from .app import Bars, app, handled, out, say
from .options import unlearn_args, with_options
from .shared import BATCH, DEFAULT_MODEL, DataDir, DatasetOpt, Device, ModelOpt, Workers, load, rt_for


@app.command("spectrum")
@handled
@with_options(("hessian_samples", "hvp_mode", "seed"), helps={"seed": "Seed of the Hessian sample and the start "
                                                                      "vector."})
def spectrum_cmd(
    model: ModelOpt = Path(DEFAULT_MODEL),
    top: Annotated[int, typer.Option(help="How many eigenvalues of largest magnitude to report.")] = 100,
    steps: Annotated[Optional[int], typer.Option(help="Lanczos steps (default 2 x --top).")] = None,
    l2: Annotated[str, typer.Option(help="Comma-separated L2 weights lambda: eigenvalues of H + lambda I.")] = "0",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the eigenvalues as JSON (- for stdout).")] = None,
    plot_path: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG (needs matplotlib).")] = None,
    dataset: DatasetOpt = None,
    device: Device = "auto",
    workers: Workers = 0,
    data_dir: DataDir = None,
    uargs: Any = None,
) -> None:
    """Top Hessian eigenvalues by Lanczos (same HVPs) and the share of negative ones per L2 weight (Figure 3)."""
    from ..io.files import STDIO, write_json
    from ..pipelines.spectrum import plot_spectrum, spectrum

    if str(json_path) == STDIO:
        out.to_stderr()
    lams = comma_list(l2, float, "l2")
    args = unlearn_args(uargs)  # the Hessian sample as gif's influence draws it
    loaded, data = load(model, dataset, data_dir)
    with Bars() as bars:
        rt = rt_for(device, BATCH, workers, bars)
        result = spectrum(loaded, data, args.hessian_samples, top, steps, lams, args.seed, rt, args.hvp_mode)
    if not rt.dist.is_main:
        return
    table = Table(title=f"Hessian spectrum: top {top} by magnitude, {result['lanczos_steps']} Lanczos steps, "
                        f"{result['seconds']:.0f} s")
    for c in ("L2 weight", "largest", "smallest", "negative share"):
        table.add_column(c, justify="right")
    for p in result["per_l2"]:
        table.add_row(f"{p['l2']:g}", f"{max(p['top_eigenvalues']):.4g}", f"{min(p['top_eigenvalues']):.4g}",
                      f"{100 * p['negative_share']:.1f}%")
    out.print(table)
    if json_path:
        write_json(json_path, result)
    if plot_path and plot_spectrum(result, plot_path) is None:
        say("no plot: matplotlib is not installed (pip install -e '.[plot]')")
