"""gif in CI: verify the chain of an edited model, JUnit gates, byte-identical reruns, the recipe."""
import filecmp
import json
import shutil
import xml.etree.ElementTree as ET

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gifcli.io.files import sha256_tensors

from .conftest import hand_accuracy, invoke


@pytest.fixture(scope="module")
def run_folder(runner, tiny_model, fake_mnist, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ci") / "run"
    r = invoke(runner, ["remove-class", "--label", 3, "--model", tiny_model, "--hessian-samples", 96, "--max-iter", 15,
                        "--out-dir", folder, "--device", "cpu", "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    return folder


def _verify(runner, edited, *extra):
    return invoke(runner, ["verify", edited, *extra])


def _one_line_failure(r, needle):
    assert r.exit_code == 1, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in r.output, r.output


def test_verify_passes_on_a_genuine_run_folder(runner, run_folder):
    r = _verify(runner, run_folder / "edited.safetensors", "--strict")
    assert r.exit_code == 0, r.output
    assert "re-derived" in r.output and len(r.output.strip().splitlines()) == 1


def test_verify_without_files_says_what_it_could_not_check(runner, run_folder, tmp_path):
    alone = tmp_path / "alone.safetensors"
    shutil.copy(run_folder / "edited.safetensors", alone)
    with safe_open(str(alone), "pt") as fh:
        meta = json.loads(fh.metadata()["gif"])
    meta["edit"].update(base_model="gone.safetensors", base_model_abs="/nowhere/gone.safetensors",
                        influence="gone.safetensors", influence_abs="/nowhere/gone.safetensors")
    save_file(load_file(str(alone)), str(alone), metadata={"gif": json.dumps(meta)})
    r = _verify(runner, alone)
    assert r.exit_code == 0 and "not checked" in r.output, r.output
    _one_line_failure(_verify(runner, alone, "--strict"), "cannot prove")


def _rewrite(src, dst, change):
    with safe_open(str(src), "pt") as fh:
        meta = json.loads(fh.metadata()["gif"])
    tensors = load_file(str(src))
    change(tensors, meta)
    meta["weights_sha256"] = sha256_tensors(tensors)
    save_file(tensors, str(dst), metadata={"gif": json.dumps(meta)})
    return dst


def test_verify_catches_one_changed_weight(runner, run_folder, tmp_path):
    def nudge(tensors, meta):
        name = sorted(tensors)[0]
        tensors[name].view(-1)[7] += 1e-3

    bad = _rewrite(run_folder / "edited.safetensors", tmp_path / "e.safetensors", nudge)
    _one_line_failure(_verify(runner, bad, "--influence", run_folder / "influence.safetensors"),
                      "not base - ")


def test_verify_catches_another_scale_in_the_metadata(runner, run_folder, tmp_path):
    def rescale(tensors, meta):
        meta["edit"]["scale"] *= 1.5

    bad = _rewrite(run_folder / "edited.safetensors", tmp_path / "e.safetensors", rescale)
    _one_line_failure(_verify(runner, bad, "--influence", run_folder / "influence.safetensors"), "not base - ")


def test_verify_catches_an_influence_file_of_another_run(runner, run_folder, tiny_model, fake_mnist, tmp_path):
    other = tmp_path / "other"
    r = invoke(runner, ["remove-class", "--label", 5, "--model", tiny_model, "--hessian-samples", 96, "--max-iter", 5,
                        "--scale", 10, "--out-dir", other, "--device", "cpu", "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    _one_line_failure(_verify(runner, run_folder / "edited.safetensors", "--influence",
                              other / "influence.safetensors"), "not the one the edit recorded")


def test_verify_catches_a_base_model_that_is_not_the_recorded_one(runner, run_folder, tiny_config, fake_mnist,
                                                                   tmp_path):
    other = tmp_path / "other.safetensors"
    r = invoke(runner, ["train", "--config", tiny_config, "--seed", 9, "--out", other, "--data-dir", fake_mnist,
                        "--device", "cpu"])
    assert r.exit_code == 0, r.output
    _one_line_failure(_verify(runner, run_folder / "edited.safetensors", "--base", other), "not the recorded one")


def test_junit_records_each_threshold(runner, tiny_model, fake_mnist, tmp_path):
    """One gate that must pass (test accuracy >= 0 %) and one that must fail (forget accuracy at
    most half a point below the unedited model's own, computed by hand): exit 1, one failure."""
    edited = tiny_model
    forget_acc = 100 * hand_accuracy(edited, fake_mnist, labels=[3])
    assert forget_acc > 0.5, "the gate below needs a forget accuracy above 0.5 %"
    limit = round(forget_acc - 0.5, 3)
    junit = tmp_path / "gates.xml"
    r = invoke(runner, ["evaluate", "--model", edited, "--forget-label", 3, "--min-test-acc", 0,
                        "--max-forget-acc", limit, "--junit", junit, "--data-dir", fake_mnist])
    assert r.exit_code == 1, r.output
    suite = ET.parse(junit).getroot()
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    assert set(cases) == {"min_test_acc >= 0", f"max_forget_acc <= {limit:g}"}
    assert cases["min_test_acc >= 0"].find("failure") is None
    failed = cases[f"max_forget_acc <= {limit:g}"].find("failure")
    assert failed is not None and "forget accuracy" in failed.get("message")


def test_two_identical_runs_write_identical_bytes(runner, tiny_model, fake_mnist, tmp_path):
    folder = tmp_path / "run"
    args = ["remove-class", "--label", 3, "--model", tiny_model, "--hessian-samples", 96, "--max-iter", 15,
            "--out-dir", folder, "--device", "cpu", "--data-dir", fake_mnist]
    r = invoke(runner, args)
    assert r.exit_code == 0, r.output
    first = tmp_path / "first"
    shutil.copytree(folder, first)
    r = invoke(runner, args)
    assert r.exit_code == 0, r.output
    for name in ("mask.json", "influence.safetensors", "edited.safetensors"):
        assert filecmp.cmp(first / name, folder / name, shallow=False), name

    def without_timings(d):
        if isinstance(d, dict):
            return {k: without_timings(v) for k, v in d.items() if k not in ("seconds", "method_seconds", "phases")}
        if isinstance(d, list):
            return [without_timings(v) for v in d]
        return d

    a, b = (json.loads((f / "report.json").read_text()) for f in (first, folder))
    assert without_timings(a) == without_timings(b)


def test_the_documented_ci_recipe_runs(tiny_model, fake_mnist, tmp_path):
    """The shell steps of docs/ci.md, as written, on tiny data: exit 0, the gates and the chain hold."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "ci.md").read_text()
    block = re.search(r"<!-- recipe -->\s*```bash\n(.*?)```\s*<!-- /recipe -->", doc, re.S).group(1)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gif").write_text(f"#!/bin/sh\nexec {sys.executable} -m gifcli \"$@\"\n")
    (bin_dir / "gif").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MODEL": str(tiny_model), "LABEL": "3",
           "GIF_DATA_DIR": str(fake_mnist), "MAX_FORGET_ACC": "100", "MIN_TEST_ACC": "50"}
    p = subprocess.run(["bash", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "verified" in p.stdout
    assert ET.parse(tmp_path / "run" / "gates.xml").getroot().get("failures") == "0"
    env["MAX_FORGET_ACC"] = "0"  # a gate that cannot pass: the job must fail
    env["MIN_TEST_ACC"] = "101"
    p = subprocess.run(["bash", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "threshold violated" in p.stderr
