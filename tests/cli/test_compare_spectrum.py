"""gif compare and gif spectrum on tiny synthetic data."""
import json

import pytest
import torch

from gifcli import load_checkpoint
from gifcli.data.datasets import DatasetSpec, batches, load_data
from gifcli.math.hvp import HessianSample

from .conftest import hand_accuracy, invoke


def test_compare_writes_all_outputs(runner, tiny_model, fake_mnist, tiny_config, tmp_path):
    retrained = tmp_path / "retrained.safetensors"
    r = invoke(runner, ["train", "--config", tiny_config, "--exclude-label", 3, "--out", retrained,
                        "--data-dir", fake_mnist, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    _, meta = load_checkpoint(retrained)
    assert meta["excluded_label"] == 3
    out = tmp_path / "cmp"
    r = invoke(runner, ["compare", "--model", tiny_model, "--forget-label", 3, "--retrained", retrained, "--no-svc",
                        "--methods", "gif,fif,grad", "--ratios", "0.1,0.3", "--hessian-samples", 64, "--max-iter", 5,
                        "--out-dir", out, "--device", "cpu", "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    assert len(results["rows"]) == 6 and {row["method"] for row in results["rows"]} == {"gif", "fif", "grad"}
    ref = results["references"]["0"]["metrics"]
    for row in results["rows"]:
        assert 0.0 <= row["mia"]["entropy"] <= 1.0
        gaps = [abs(row[k]["accuracy"] - ref[k]["accuracy"]) for k in ("forget", "retain", "test")]
        gaps.append(abs(row["mia"]["entropy"] - ref["mia"]["entropy"]))
        assert row["avg_gap"] == pytest.approx(sum(gaps) / 4)
        assert (out / "cells" / row["cell"] / "edited.safetensors").is_file()
    md = (out / "results.md").read_text()
    assert "| gif (topk-outputs 30%) |" in md and "Avg. Gap" in md
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # the plot extra is optional
        assert "no plot" in r.output
    else:
        assert (out / "results.png").stat().st_size > 1000


def test_compare_other_methods_over_seeds(runner, tiny_model, fake_mnist, tmp_path):
    out = tmp_path / "cmp"
    r = invoke(runner, ["compare", "--model", tiny_model, "--forget-label", 3, "--methods", "ssd,gif,retrain",
                        "--ratios", "0.1", "--seeds", "0,1", "--hessian-samples", 64, "--max-iter", 5,
                        "--out-dir", out, "--device", "cpu", "--data-dir", fake_mnist, "--no-plot"])
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert sorted((row["method"], row["seed"]) for row in rows) == [
        ("gif", 0), ("gif", 1), ("retrain", 0), ("retrain", 1), ("ssd", 0), ("ssd", 1)]
    for row in rows:
        ref = results["references"][str(row["seed"])]
        # the reference is the retrained model of the row's seed, whose checkpoint records its own training time
        retrain_cell = next(r for r in rows if r["method"] == "retrain" and r["seed"] == row["seed"])
        _, retrain_meta = load_checkpoint(out / "cells" / retrain_cell["cell"] / "edited.safetensors")
        assert retrain_meta["edit"]["method"] == "retrain"
        assert set(row["mia"]["svc"]) == {"correctness", "confidence", "entropy", "m_entropy", "probability"}
        # every row's test accuracy (the other classes' test images) is its edited checkpoint's, by hand
        edited = out / "cells" / row["cell"] / "edited.safetensors"
        assert row["test"]["accuracy"] == pytest.approx(hand_accuracy(edited, fake_mnist, exclude=3), abs=1e-12)
        assert ref["metrics"]["test"]["accuracy"] == pytest.approx(
            hand_accuracy(out / "cells" / retrain_cell["cell"] / "edited.safetensors", fake_mnist, exclude=3),
            abs=1e-12)
    ssd = [row for row in rows if row["method"] == "ssd"]
    assert all({"alpha", "lambda"} <= set(row["hyper"]) for row in ssd)
    assert all(len(row["validation_sweep"]) == row["hyper"]["search_budget"] == 15 for row in ssd)
    summary = {e["method"]: e for e in results["summary"]}
    accs = [100 * row["test"]["accuracy"] for row in ssd]
    assert summary["ssd"]["seeds"] == 2 and summary["ssd"]["test acc %"]["mean"] == pytest.approx(sum(accs) / 2)


def test_a_second_compare_into_the_same_folder_reuses_nothing(runner, tiny_model, fake_mnist, tmp_path):
    out = tmp_path / "cmp"
    common = ["compare", "--model", tiny_model, "--methods", "gif", "--ratios", "0.2", "--hessian-samples", 32,
              "--max-iter", 3, "--scale", "1,10", "--out-dir", out, "--device", "cpu", "--data-dir", fake_mnist,
              "--no-plot", "--no-svc"]
    for label in (3, 5):
        r = invoke(runner, [*common, "--forget-label", label])
        assert r.exit_code == 0, r.output
        mask = json.loads((out / "cells" / "gif-topk-outputs-0.2-s0" / "mask.json").read_text())
        assert mask["forget"]["label"] == label
        assert json.loads((out / "results.json").read_text())["label"] == label


def test_compare_config_file(runner, tiny_model, fake_mnist, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {tiny_model}\nforget_label: 2\nmethods: [gif]\nratios: [0.2]\nhessian_samples: 32\n"
                   f"max_iter: 3\nscale: '1,10'\n")
    out = tmp_path / "cmp"
    r = invoke(runner, ["compare", "--config", cfg, "--out-dir", out, "--no-plot", "--no-svc", "--device", "cpu",
                        "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    assert results["label"] == 2 and [row["ratio"] for row in results["rows"]] == [0.2]
    first = [s for s in results["rows"][0]["validation_sweep"] if s.get("step", 1) == 1 and "correction" not in s]
    assert sorted(s["scale"] for s in first)[:2] == [1.0, 10.0]  # the given grid (the first step's sweep)


def test_compare_bad_method(runner, tiny_model, fake_mnist, tmp_path):
    r = invoke(runner, ["compare", "--model", tiny_model, "--forget-label", 3, "--methods", "gif,magic",
                        "--out-dir", tmp_path / "c", "--data-dir", fake_mnist])
    assert r.exit_code == 2 and "unknown method" in r.output, r.output
    assert not (tmp_path / "c").exists()


def test_spectrum_matches_eigvalsh_on_a_tiny_model(runner, tiny_config, fake_mnist, tmp_path):
    import yaml

    cfg = tmp_path / "lr.yaml"
    cfg.write_text(yaml.safe_dump({"model": "logreg", "dataset": "mnist", "epochs": 1, "batch_size": 64, "seed": 0}))
    model_path = tmp_path / "lr.safetensors"
    r = invoke(runner, ["train", "--config", cfg, "--out", model_path, "--data-dir", fake_mnist, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "s.json"
    r = invoke(runner, ["spectrum", "--model", model_path, "--hessian-samples", 64, "--top", 20, "--steps", 120,
                        "--l2", "0,0.01", "--json", out, "--device", "cpu", "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    # the dumb way: the explicit Hessian of the same sample in float64 (logreg: 7 850 parameters)
    model, _ = load_checkpoint(model_path)
    data = load_data(DatasetSpec.parse("mnist"), str(fake_mnist))
    sample = data.fit.sample(64, seed=0)  # what `gif spectrum --hessian-samples 64 --seed 0` draws
    model = model.double()
    hessian_batches = [(x.double(), y) for x, y in batches(sample)]
    hess = HessianSample(model, hessian_batches)
    n = hess.space.size
    # logreg: H = (1/n) sum_i S_i (x) a_i a_i^T with S_i = diag(p_i) - p_i p_i^T and a_i = [x_i; 1]. Written as
    # B B^T / n with B = [L_i (x) a_i] (S_i = L_i L_i^T), its non-zero eigenvalues are those of B^T B / n (640 x 640).
    from torch.func import functional_call

    W = dict(model.named_parameters())
    x = torch.cat([b[0] for b in hessian_batches])
    p = torch.softmax(functional_call(model, W, (x,)), 1)
    a = torch.cat([x.flatten(1), torch.ones(len(x), 1, dtype=x.dtype)], 1)
    cols = []
    for i in range(len(x)):
        S = torch.diag(p[i]) - torch.outer(p[i], p[i])
        evals, evecs = torch.linalg.eigh(S)
        L = evecs * evals.clamp(min=0).sqrt()
        # parameter order: weight (10 x 784) row-major, then bias (10): column k of L (x) a_i
        for k in range(10):
            w_part = torch.outer(L[:, k], a[i, :784]).reshape(-1)
            cols.append(torch.cat([w_part, L[:, k] * a[i, 784]]))
    B = torch.stack(cols, 1)
    H_small = B.T @ B / len(x)
    exact = torch.linalg.eigvalsh(H_small)
    top_exact = exact[torch.argsort(exact.abs(), descending=True)[:20]].sort().values
    got = torch.tensor(res["per_l2"][0]["top_eigenvalues"], dtype=torch.float64).sort().values
    torch.testing.assert_close(got, top_exact, rtol=1e-3, atol=1e-6)
    shifted = torch.tensor(res["per_l2"][1]["top_eigenvalues"], dtype=torch.float64).sort().values
    torch.testing.assert_close(shifted, top_exact + 0.01, rtol=1e-3, atol=1e-6)
    assert res["per_l2"][0]["negative_share"] == 0.0  # a convex model: no negative eigenvalue
    assert n == 7850


def test_evaluate_and_compare_give_the_same_avg_gap(runner, tiny_model, tiny_config, fake_mnist, tmp_path):
    """One Avg. Gap: the unedited model against a model retrained without class 3, once through
    `gif evaluate --retrained` and once as compare's 'unedited' row."""
    retrained = tmp_path / "no3.safetensors"
    r = invoke(runner, ["train", "--config", tiny_config, "--exclude-label", 3, "--seed", 4, "--out", retrained,
                        "--data-dir", fake_mnist, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    report = tmp_path / "eval.json"
    r = invoke(runner, ["evaluate", "--model", tiny_model, "--forget-label", 3, "--retrained", retrained, "--json",
                        report, "--device", "cpu", "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    evaluated = json.loads(report.read_text())["retrained"]["avg_gap"]
    r = invoke(runner, ["compare", "--model", tiny_model, "--forget-label", 3, "--retrained", retrained, "--methods",
                        "unedited", "--no-svc", "--no-plot", "--out-dir", tmp_path / "cmp", "--device", "cpu",
                        "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    row = json.loads((tmp_path / "cmp" / "results.json").read_text())["rows"][0]
    assert row["method"] == "unedited" and evaluated > 0
    assert row["avg_gap"] == pytest.approx(evaluated, rel=1e-12)
