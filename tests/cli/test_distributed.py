"""Data-parallel runs on torch.distributed (gloo, 2 CPU processes started by torchrun): the same
vectors, masks and metrics as one process; rank 0 alone writes; a failing rank ends both."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from gifcli import load_checkpoint
from gifcli.io.checkpoint import save_checkpoint

from .conftest import invoke

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GIF_DIST_TIMEOUT": "60"}


def torchrun(args, tmp_path, nproc=2, timeout=240):
    log = tmp_path / f"writes-{time.monotonic_ns()}.log"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "gifcli", *[str(a) for a in args]]
    start = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**ENV, "GIF_WRITE_LOG": str(log)})
    writes = log.read_text().splitlines() if log.exists() else []
    return p, writes, time.monotonic() - start


def _delta(path):
    with safe_open(str(path), "pt") as fh:
        return fh.get_tensor("delta"), fh.get_tensor("indices"), json.loads(fh.metadata()["gif"])


@pytest.fixture(scope="module")
def models(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    model, meta = load_checkpoint(tiny_model)
    keep = {k: meta[k] for k in ("arch", "arch_kwargs", "dataset", "num_classes", "input_shape", "train_config")}
    save_checkpoint(d / "f64.safetensors", model.double(), keep)
    return {"f32": Path(tiny_model), "f64": d / "f64.safetensors"}


@pytest.mark.parametrize("precision,rtol", [("f64", 1e-10), ("f32", 1e-5)])
def test_two_ranks_give_the_one_process_results(runner, models, fake_mnist, tmp_path, precision, rtol):
    model = models[precision]
    common = ["--model", model, "--forget-label", 3, "--data-dir", fake_mnist]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    r = invoke(runner, ["select", *common, "--ratio", 0.2, "--out", one / "mask.json"])
    assert r.exit_code == 0, r.output
    p, writes, _ = torchrun(["select", *common, "--ratio", 0.2, "--out", two / "mask.json"], tmp_path)
    assert p.returncode == 0, p.stderr
    m1, m2 = (json.loads((f / "mask.json").read_text()) for f in (one, two))
    assert m1["index_sha256"] == m2["index_sha256"]
    assert writes == [f"0 {(two / 'mask.json').resolve()}"]

    # a damped, converged solve: the products of 1 and 2 ranks differ by rounding only (their sums
    # run in another order), and a well-conditioned system keeps that difference at rounding level
    # (an ill-conditioned one amplifies it with every Krylov iteration; see docs/distributed.md)
    solve = ["--mask", one / "mask.json", "--hessian-samples", 96, "--max-iter", 300, "--tol", 1e-9,
             "--damping", 1e-2, "--device", "cpu"]
    r = invoke(runner, ["influence", *common, *solve, "--out", one / "i.safetensors"])
    assert r.exit_code == 0, r.output
    p, writes, _ = torchrun(["influence", *common, *solve, "--out", two / "i.safetensors"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert writes == [f"0 {(two / 'i.safetensors').resolve()}"]  # rank 0 alone, once
    d1, i1, meta1 = _delta(one / "i.safetensors")
    d2, i2, meta2 = _delta(two / "i.safetensors")
    assert torch.equal(i1, i2) and meta2["hessian"]["ranks"] == 2 and meta1["hessian"]["ranks"] == 1
    assert meta1["stats"]["converged"] and meta2["stats"]["converged"]
    torch.testing.assert_close(d2, d1, rtol=rtol, atol=rtol * float(d1.abs().max()))

    rep = ["--forget-label", 3, "--model", model, "--data-dir", fake_mnist, "--device", "cpu"]
    r = invoke(runner, ["evaluate", *rep, "--json", one / "r.json"])
    assert r.exit_code == 0, r.output
    p, _, _ = torchrun(["evaluate", *rep, "--json", two / "r.json"], tmp_path)
    assert p.returncode == 0, p.stderr
    r1, r2 = (json.loads((f / "r.json").read_text()) for f in (one, two))
    for key in ("forget", "test"):
        assert r1[key]["count"] == r2[key]["count"] and r1[key]["accuracy"] == r2[key]["accuracy"]
        assert r2[key]["loss"] == pytest.approx(r1[key]["loss"], rel=rtol)
    # the membership score is a mean of probabilities summed in another order over two ranks
    assert set(r1["mia"]) == set(r2["mia"])
    for key in r1["mia"]:
        assert r2["mia"][key] == pytest.approx(r1["mia"][key], rel=rtol, abs=0)


def test_remove_class_on_two_ranks_writes_each_file_once(models, fake_mnist, tmp_path):
    run = tmp_path / "run"
    p, writes, _ = torchrun(["remove-class", "--label", 3, "--model", models["f32"], "--hessian-samples", 96,
                             "--max-iter", 10, "--out-dir", run, "--device", "cpu", "--data-dir", fake_mnist], tmp_path)
    assert p.returncode == 0, p.stderr
    ranks = {line.split(" ", 1)[0] for line in writes}
    paths = [line.split(" ", 1)[1] for line in writes]
    assert ranks == {"0"} and len(paths) == len(set(paths)) == 4
    assert sorted(Path(x).name for x in paths) == ["edited.safetensors", "influence.safetensors", "mask.json",
                                                    "report.json"]
    assert p.stdout.count("remove class 3") == 1  # the table is printed once


FAILING_MODEL = '''
import os
import torch
from torch import nn


class FailsOnRankOne(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if os.environ.get("RANK") == "1" and self.calls == 6:
            raise RuntimeError("rank 1 failed on purpose")
        return self.fc(x.flatten(1))


def build():
    return FailsOnRankOne()
'''


def test_a_failing_rank_ends_both_with_one_line(runner, fake_mnist, tmp_path):
    module = tmp_path / "failing.py"
    module.write_text(FAILING_MODEL)
    torch.manual_seed(0)
    ckpt = tmp_path / "m.safetensors"
    r = invoke(runner, ["train", "--arch", f"{module}:build", "--epochs", 1, "--out", ckpt, "--device", "cpu",
                        "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    out = tmp_path / "run"
    p, writes, seconds = torchrun(["remove-class", "--label", 3, "--model", ckpt, "--hessian-samples", 64,
                                   "--out-dir", out, "--device", "cpu", "--data-dir", fake_mnist], tmp_path, timeout=120)
    assert p.returncode != 0 and seconds < 90
    ours = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert ours == ["error: RuntimeError: rank 1 failed on purpose (set GIF_DEBUG=1 for a traceback)"], p.stderr
    assert writes == [] and not out.exists()


def test_commands_without_a_parallel_form_refuse_torchrun(fake_mnist, tmp_path, tiny_config):
    p, writes, _ = torchrun(["train", "--config", tiny_config, "--out", tmp_path / "m.safetensors", "--data-dir",
                             fake_mnist], tmp_path)
    assert p.returncode != 0 and "runs in one process" in p.stderr and writes == []


def test_every_message_and_result_line_appears_once(models, fake_mnist, tmp_path):
    """Rank 0 alone prints: the result line of a run that works, the error of one that fails (an
    error raised before the process group is joined included)."""
    common = ["--model", models["f32"], "--forget-label", 3, "--data-dir", fake_mnist]
    p, _, _ = torchrun(["select", *common, "--ratio", 0.2, "--out", tmp_path / "mask.json"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("wrote ") == 1, p.stdout
    p, _, _ = torchrun(["influence", *common, "--mask", tmp_path / "missing.json", "--out", tmp_path / "i.safetensors"],
                       tmp_path)
    assert p.returncode != 0
    assert (p.stdout + p.stderr).count("mask file not found") == 1, p.stdout + p.stderr
