"""Bad input: one line naming the problem, exit 2 for usage errors and 1 for the rest,
no traceback, and no output file left behind."""
import json

import pytest

from .conftest import invoke


def _assert_refused(r, code, needle, out=None):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    assert needle.lower() in r.output.lower(), r.output
    if code == 1:
        lines = [l for l in r.output.splitlines() if l.strip()]
        assert len(lines) == 1, r.output
    if out is not None:
        assert not out.exists()
        assert not list(out.parent.glob(f".{out.name}.*")), "a temporary file was left behind"


@pytest.fixture(scope="module")
def mask(runner, tiny_model, fake_mnist, tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "mask.json"
    r = invoke(runner, ["select", "--model", tiny_model, "--forget-label", 1, "--out", path, "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    return path


def test_missing_model(runner, tmp_path, fake_mnist):
    out = tmp_path / "m.json"
    r = invoke(runner, ["select", "--model", tmp_path / "nope.safetensors", "--forget-label", 1, "--out", out,
                        "--data-dir", fake_mnist])
    _assert_refused(r, 1, "not found", out)


def test_corrupted_safetensors(runner, tiny_model, tmp_path, fake_mnist):
    bad = tmp_path / "bad.safetensors"
    data = tiny_model.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "m.json"
    r = invoke(runner, ["select", "--model", bad, "--forget-label", 1, "--out", out, "--data-dir", fake_mnist])
    _assert_refused(r, 1, "not a readable safetensors", out)


def test_tampered_weights(runner, tiny_model, tmp_path, fake_mnist):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(tiny_model), "pt") as fh:
        meta = fh.metadata()
    state = load_file(str(tiny_model))
    name = next(iter(state))
    state[name] = state[name] + 1.0
    bad = tmp_path / "tampered.safetensors"
    save_file(state, str(bad), metadata=meta)
    r = invoke(runner, ["evaluate", "--model", bad, "--data-dir", fake_mnist])
    _assert_refused(r, 1, "sha256")


def test_wrong_kind_of_file(runner, mask, tmp_path, fake_mnist, tiny_model):
    out = tmp_path / "m.json"
    r = invoke(runner, ["select", "--model", mask, "--forget-label", 1, "--out", out, "--data-dir", fake_mnist])
    _assert_refused(r, 1, "safetensors", out)
    # an influence file where a model is expected
    infl = tmp_path / "i.safetensors"
    r = invoke(runner, ["influence", "--model", tiny_model, "--mask", mask, "--forget-label", 1, "--hessian-samples", 32,
                        "--max-iter", 2, "--device", "cpu", "--out", infl, "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    r = invoke(runner, ["evaluate", "--model", infl, "--data-dir", fake_mnist])
    _assert_refused(r, 1, "expected a model checkpoint")
    # a model where an influence file is expected
    out2 = tmp_path / "e.safetensors"
    r = invoke(runner, ["apply", "--model", tiny_model, "--influence", tiny_model, "--scale", 1, "--out", out2])
    _assert_refused(r, 1, "expected a influence file", out2)


def test_mask_that_is_not_json(runner, tiny_model, tmp_path, fake_mnist):
    bad = tmp_path / "mask.json"
    bad.write_text("{not json")
    out = tmp_path / "i.safetensors"
    r = invoke(runner, ["influence", "--model", tiny_model, "--mask", bad, "--forget-label", 1, "--device", "cpu",
                        "--out", out, "--data-dir", fake_mnist])
    _assert_refused(r, 1, "not a readable mask", out)


@pytest.mark.parametrize("label", [10, -1])
def test_label_outside_classes(runner, tiny_model, tmp_path, fake_mnist, label):
    out = tmp_path / "m.json"
    r = invoke(runner, ["select", "--model", tiny_model, "--forget-label", label, "--out", out, "--data-dir", fake_mnist])
    _assert_refused(r, 2, "outside", out)


@pytest.mark.parametrize("ratio", [0, 1.5, -0.1])
def test_ratio_outside_unit_interval(runner, tiny_model, tmp_path, fake_mnist, ratio):
    out = tmp_path / "m.json"
    r = invoke(runner, ["select", "--model", tiny_model, "--forget-label", 1, "--ratio", ratio, "--out", out,
                        "--data-dir", fake_mnist])
    _assert_refused(r, 2, "ratio", out)


@pytest.mark.parametrize("args,needle", [
    (["--criterion", "biggest"], "--criterion must be one of"),
    (["--method", "magic"], "unknown method"),
    (["--solver", "lu"], "--solver must be one of"),
])
def test_unknown_names(runner, tiny_model, tmp_path, fake_mnist, args, needle):
    out = tmp_path / "run"
    r = invoke(runner, ["remove-class", "--label", 1, "--model", tiny_model, "--out-dir", out, "--device", "cpu",
                        "--data-dir", fake_mnist, *args])
    _assert_refused(r, 2, needle)
    assert not (out / "edited.safetensors").exists()


def test_unknown_model_in_config(runner, tmp_path, fake_mnist):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: transformer\ndataset: mnist\n")
    out = tmp_path / "m.safetensors"
    r = invoke(runner, ["train", "--config", cfg, "--out", out, "--data-dir", fake_mnist])
    _assert_refused(r, 2, "unknown architecture", out)


def test_unwritable_output(runner, tiny_model, tmp_path, fake_mnist):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "folder" / "m.json"  # a file where a folder should be
    r = invoke(runner, ["select", "--model", tiny_model, "--forget-label", 1, "--out", out, "--data-dir", fake_mnist])
    _assert_refused(r, 1, "is a file")
    # a folder that does not exist yet is made with the file
    out = tmp_path / "no" / "such" / "folder" / "m.json"
    r = invoke(runner, ["select", "--model", tiny_model, "--forget-label", 1, "--out", out, "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    assert out.is_file()


def test_mask_for_another_model(runner, mask, tmp_path, fake_mnist, tiny_config):
    other = tmp_path / "other.safetensors"
    r = invoke(runner, ["train", "--config", tiny_config, "--seed", 7, "--out", other, "--data-dir", fake_mnist,
                        "--device", "cpu"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "i.safetensors"
    r = invoke(runner, ["influence", "--model", other, "--mask", mask, "--forget-label", 1, "--device", "cpu",
                        "--out", out, "--data-dir", fake_mnist])
    _assert_refused(r, 1, "another model", out)


def test_influence_for_another_mask_or_model(runner, mask, tiny_model, tmp_path, fake_mnist, tiny_config):
    infl = tmp_path / "i.safetensors"
    r = invoke(runner, ["influence", "--model", tiny_model, "--mask", mask, "--forget-label", 1, "--hessian-samples", 32,
                        "--max-iter", 2, "--device", "cpu", "--out", infl, "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    other = tmp_path / "other.safetensors"
    r = invoke(runner, ["train", "--config", tiny_config, "--seed", 8, "--out", other, "--data-dir", fake_mnist,
                        "--device", "cpu"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "e.safetensors"
    r = invoke(runner, ["apply", "--model", other, "--influence", infl, "--scale", 1, "--out", out])
    _assert_refused(r, 1, "another model", out)


def test_edited_mask_is_refused(runner, mask, tiny_model, tmp_path, fake_mnist):
    doc = json.loads(mask.read_text())
    entry = next(p for p in doc["parameters"] if p["ranges"] and p["ranges"][-1][1] < p["numel"])
    entry["ranges"][-1] = [entry["ranges"][-1][0] + 1, entry["ranges"][-1][1] + 1]  # counts stay consistent
    bad = tmp_path / "edited_mask.json"
    bad.write_text(json.dumps(doc))
    out = tmp_path / "i.safetensors"
    r = invoke(runner, ["influence", "--model", tiny_model, "--mask", bad, "--forget-label", 1, "--device", "cpu",
                        "--out", out, "--data-dir", fake_mnist])
    _assert_refused(r, 1, "sha256", out)


def test_missing_data(runner, tiny_model, tmp_path, monkeypatch):
    # no data anywhere on the search path, and the download fails (offline or blocked)
    monkeypatch.chdir(tmp_path)
    import gifcli.data.datasets as ds

    def offline(*_a, **_k):
        raise ConnectionError("offline")

    monkeypatch.setattr(ds, "_download", offline)
    out = tmp_path / "m.json"
    r = invoke(runner, ["select", "--model", tiny_model, "--forget-label", 1, "--out", out,
                        "--data-dir", tmp_path / "empty"])
    _assert_refused(r, 1, "looked in", out)
    assert "--data-dir" in r.output


def test_bad_scale(runner, tiny_model, tmp_path, fake_mnist):
    r = invoke(runner, ["remove-class", "--label", 1, "--model", tiny_model, "--scale", "big", "--out-dir", tmp_path / "r",
                        "--data-dir", fake_mnist])
    _assert_refused(r, 2, "--scale")


def test_cuda_requested_without_gpu(runner, tiny_model, mask, tmp_path, fake_mnist):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "i.safetensors"
    r = invoke(runner, ["influence", "--model", tiny_model, "--mask", mask, "--forget-label", 1, "--device", "cuda",
                        "--out", out, "--data-dir", fake_mnist])
    _assert_refused(r, 2, "no CUDA", out)
