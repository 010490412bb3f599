"""Faults and bad inputs a careful user tries: each gives one line and a non-zero exit, and no file
(or, where the input is fine, works): non-finite values, index files, paths and terminals."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gifcli.io.files import sha256_tensors

from .conftest import invoke, refused


def _rewrite(src, dst, change):
    """A copy of a gif safetensors file with ``change(tensors, meta)`` applied and hashes recomputed."""
    with safe_open(str(src), "pt") as fh:
        meta = json.loads(fh.metadata()["gif"])
    tensors = load_file(str(src))
    change(tensors, meta)
    if "weights_sha256" in meta:
        meta["weights_sha256"] = sha256_tensors(tensors)
    if "delta_sha256" in meta:
        meta["delta_sha256"] = sha256_tensors({"delta": tensors["delta"]})
    save_file(tensors, str(dst), metadata={"gif": json.dumps(meta)})
    return dst


@pytest.fixture(scope="module")
def mask(runner, tiny_model, fake_mnist, tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "mask.json"
    r = invoke(runner, ["select", "--model", tiny_model, "--forget-label", 1, "--out", path, "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    return path


@pytest.fixture(scope="module")
def influence_file(runner, tiny_model, mask, fake_mnist, tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "i.safetensors"
    r = invoke(runner, ["influence", "--model", tiny_model, "--mask", mask, "--forget-label", 1, "--hessian-samples",
                        32, "--max-iter", 3, "--device", "cpu", "--out", path, "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    return path


# --- non-finite values never enter or leave a gif file silently -------------------------------
def test_a_model_with_a_nan_weight_is_refused(runner, tiny_model, fake_mnist, tmp_path):
    def poison(tensors, meta):
        name = next(iter(tensors))
        tensors[name][0].view(-1)[0] = float("nan")

    bad = _rewrite(tiny_model, tmp_path / "nan.safetensors", poison)
    out = tmp_path / "i.safetensors"
    r = invoke(runner, ["influence", "--model", bad, "--method", "if", "--forget-label", 1, "--device", "cpu",
                        "--out", out, "--data-dir", fake_mnist])
    refused(r, "NaN", out)
    rep = tmp_path / "r.json"
    r = invoke(runner, ["evaluate", "--model", bad, "--json", rep, "--data-dir", fake_mnist])
    refused(r, "NaN", rep)


def test_outputs_that_overflow_are_refused_not_written_as_nan(runner, tiny_model, fake_mnist, tmp_path):
    def blow_up(tensors, meta):
        for name, t in tensors.items():
            tensors[name] = t * 1e18  # finite weights, infinite logits

    bad = _rewrite(tiny_model, tmp_path / "huge.safetensors", blow_up)
    rep = tmp_path / "r.json"
    r = invoke(runner, ["evaluate", "--model", bad, "--json", rep, "--data-dir", fake_mnist])
    refused(r, "not finite", rep)


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_damping_must_be_finite_and_non_negative(runner, tiny_model, mask, fake_mnist, tmp_path, value):
    out = tmp_path / "i.safetensors"
    r = invoke(runner, ["influence", "--model", tiny_model, "--mask", mask, "--forget-label", 1, "--damping", value,
                        "--out", out, "--data-dir", fake_mnist])
    refused(r, "--damping", out, code=2)


@pytest.mark.parametrize("scale", ["1e300", "inf", "nan"])
def test_scales_that_overflow_write_nothing(runner, tiny_model, influence_file, tmp_path, scale):
    out = tmp_path / "e.safetensors"
    r = invoke(runner, ["apply", "--model", tiny_model, "--influence", influence_file, "--scale", scale, "--out", out])
    assert r.exit_code in (1, 2) and "Traceback" not in r.output, r.output
    assert not out.exists()


def test_an_influence_file_with_a_nan_is_refused(runner, tiny_model, influence_file, tmp_path):
    def poison(tensors, meta):
        tensors["delta"][0] = float("nan")

    bad = _rewrite(influence_file, tmp_path / "nan_delta.safetensors", poison)
    out = tmp_path / "e.safetensors"
    r = invoke(runner, ["apply", "--model", tiny_model, "--influence", bad, "--scale", 1, "--out", out])
    refused(r, "NaN", out)


def test_an_edited_delta_is_caught_by_its_hash(runner, tiny_model, influence_file, tmp_path):
    with safe_open(str(influence_file), "pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(influence_file))
    tensors["delta"][0] += 1.0
    bad = tmp_path / "edited.safetensors"
    save_file(tensors, str(bad), metadata=meta)  # the recorded delta_sha256 is left as it was
    out = tmp_path / "e.safetensors"
    r = invoke(runner, ["apply", "--model", tiny_model, "--influence", bad, "--scale", 1, "--out", out])
    refused(r, "sha256", out)


# --- index files are checked field by field before use ----------------------------------------
def _mask_variant(mask, tmp_path, change):
    from gifcli.io.artifacts import index_sha256
    from gifcli.math.params import IndexSet, ParamSpace

    doc = json.loads(mask.read_text())
    change(doc)
    # counts and the index hash recomputed, so only the field checks can catch it
    for p in doc["parameters"]:
        p["selected"] = sum(b - a for a, b in p["ranges"])
    doc["selected"] = sum(p["selected"] for p in doc["parameters"])
    space = ParamSpace(tuple(p["name"] for p in doc["parameters"]), tuple(tuple(p["shape"]) for p in doc["parameters"]))
    flat = torch.cat([torch.arange(a, min(b, a + 10), dtype=torch.int64) + off for p, off in
                      zip(doc["parameters"], space.offsets) for a, b in p["ranges"]])
    doc["index_sha256"] = index_sha256(IndexSet(space, torch.unique(flat)))
    path = tmp_path / "variant.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("change,needle", [
    (lambda d: d["parameters"][0]["ranges"].append([d["parameters"][0]["numel"] - 1, d["parameters"][0]["numel"] + 5]),
     "outside"),
    (lambda d: d["parameters"][0]["ranges"].append([10, 10 ** 12]), "outside"),
    (lambda d: d["parameters"][0].update(name="no.such.weight"), "not in the model"),
    (lambda d: d["parameters"][0]["ranges"].insert(0, [1.5, 3]), "not an integer"),
])
def test_mask_fields_are_checked_against_the_model(runner, tiny_model, mask, fake_mnist, tmp_path, change, needle):
    bad = _mask_variant(mask, tmp_path, change)
    out = tmp_path / "i.safetensors"
    r = invoke(runner, ["influence", "--model", tiny_model, "--mask", bad, "--forget-label", 1, "--device", "cpu",
                        "--out", out, "--data-dir", fake_mnist])
    refused(r, needle, out)
    assert str(bad) in r.output


def test_a_json_nesting_bomb_names_the_file(runner, tiny_model, fake_mnist, tmp_path):
    bomb = tmp_path / "bomb.json"
    bomb.write_text("[" * 100000 + "]" * 100000)
    out = tmp_path / "i.safetensors"
    r = invoke(runner, ["influence", "--model", tiny_model, "--mask", bomb, "--forget-label", 1, "--device", "cpu",
                        "--out", out, "--data-dir", fake_mnist])
    refused(r, str(bomb), out)


def test_a_ratio_that_selects_nothing_writes_no_mask(runner, tiny_model, fake_mnist, tmp_path):
    out = tmp_path / "m.json"
    r = invoke(runner, ["select", "--model", tiny_model, "--forget-label", 1, "--ratio", 1e-6, "--out", out,
                        "--data-dir", fake_mnist])
    refused(r, "selects no parameter", out, code=2)


# --- paths and terminals ----------------------------------------------------------------------
def test_paths_with_markup_and_newlines(runner, tiny_model, influence_file, tmp_path):
    (tmp_path / "run [").mkdir()
    out = tmp_path / "run [" / "x] edited [v2].safetensors"  # the path holds [/x], rich's closing tag
    r = invoke(runner, ["apply", "--model", tiny_model, "--influence", influence_file, "--scale", 1, "--out", out])
    assert r.exit_code == 0, r.output
    assert out.is_file() and "[/x] edited [v2].safetensors" in r.output
    weird = tmp_path / "line\nbreak [/x]"
    r = invoke(runner, ["evaluate", "--model", weird])
    refused(r, "not found")


def test_json_dash_is_standard_output(runner, tiny_model, fake_mnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke(runner, ["evaluate", "--model", tiny_model, "--json", "-", "--data-dir", fake_mnist, "--no-mia"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "-").exists()
    stdout = r.stdout
    doc = json.loads(stdout[stdout.index("{"):])
    assert doc["format"] == "gif-report"


def test_only_regular_files_are_replaced(runner, tiny_model, influence_file, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    r = invoke(runner, ["apply", "--model", tiny_model, "--influence", influence_file, "--scale", 1, "--out", fifo])
    refused(r, "not a regular file")
    assert fifo.exists() and not fifo.is_file()
    link = tmp_path / "link.safetensors"
    link.symlink_to(os.devnull)
    r = invoke(runner, ["apply", "--model", tiny_model, "--influence", influence_file, "--scale", 1, "--out", link])
    refused(r, "link")
    assert os.path.islink(link)
    folder = tmp_path / "a_folder"
    folder.mkdir()
    r = invoke(runner, ["apply", "--model", tiny_model, "--influence", influence_file, "--scale", 1, "--out", folder])
    refused(r, "folder")


def test_runs_with_stdout_closed(tiny_model, mask, fake_mnist, tmp_path):
    out = tmp_path / "m.json"
    cmd = (f"{sys.executable} -m gifcli select --model '{tiny_model}' --forget-label 1 --out '{out}' "
           f"--data-dir '{fake_mnist}' >&-")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert out.is_file() and json.loads(out.read_text())["format"] == "gif-mask"


def test_unknown_method_writes_nothing(runner, tiny_model, fake_mnist, tmp_path):
    out = tmp_path / "run"
    for bad in (["--method", "magic"], ["--ratio", "2"], ["--solver", "lu"], ["--hvp-mode", "fast"],
                ["--weight-decay", "lots"], ["--memory-budget", "much"]):
        r = invoke(runner, ["remove-class", "--label", 1, "--model", tiny_model, "--out-dir", out, "--data-dir",
                            fake_mnist, *bad])
        refused(r, bad[0].lstrip("-"), code=2)
        assert not out.exists()


def test_a_library_value_error_is_a_runtime_failure_not_a_usage_error(runner, tiny_model, mask, fake_mnist, tmp_path,
                                                                       monkeypatch):
    """Only gif's own validation is a usage error (exit 2); a ValueError from inside the computation (torch's)
    is a failure, exit 1, one line, and GIF_DEBUG=1 shows its traceback."""
    import gifcli.methods.influence.steps as steps

    def broken(*args, **kwargs):
        raise ValueError("expected a non-empty tensor (from inside torch)")

    monkeypatch.setattr(steps, "influence", broken)
    out = tmp_path / "i.safetensors"
    args = ["influence", "--model", tiny_model, "--mask", mask, "--forget-label", 1, "--hessian-samples", 32,
            "--device", "cpu", "--out", out, "--data-dir", fake_mnist]
    r = invoke(runner, args)
    refused(r, "ValueError: expected a non-empty tensor", out, code=1)
    assert "GIF_DEBUG" in r.output
    monkeypatch.setenv("GIF_DEBUG", "1")
    r = invoke(runner, args)
    assert isinstance(r.exception, ValueError) and not out.exists()


def test_a_ctrl_c_while_gif_is_starting_is_one_line(tmp_path):
    """SIGINT before the command line has finished importing (torch and the rest): one line, exit 130, no
    traceback. The import is made to raise KeyboardInterrupt, as a Ctrl-C in the first second does."""
    hook = tmp_path / "sitecustomize.py"
    hook.write_text(
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'gifcli.cli':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "gifcli", "--help"], capture_output=True, text=True, env=env,
                          cwd=tmp_path)
    assert done.returncode == 130, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in done.stderr


def test_torchscript_weights_are_refused_by_name(runner, fake_mnist, tmp_path):
    """A TorchScript archive is not a state dict: the refusal names TorchScript and says what to pass."""
    scripted = torch.jit.script(torch.nn.Linear(4, 2))
    archive = tmp_path / "net.pt"
    scripted.save(str(archive))
    out = tmp_path / "imported.safetensors"
    r = invoke(runner, ["import", "--arch", "cnn", "--weights", archive, "--dataset", "mnist",
                        "--data-dir", fake_mnist, "--out", out, "--device", "cpu"])
    refused(r, "TorchScript", out)
    assert "state_dict" in r.output and "export" in r.output


@pytest.mark.parametrize("command", ["evaluate", "remove-class"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(runner, tiny_model, tmp_path, command):
    """`--json` or `--out-dir` under a regular file: refused before anything else is read or computed
    (here the data folder is empty, so any work would fail on that first), one line, exit 1, nothing
    written. (A folder that does not exist yet is made when the file is written.)"""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    empty = tmp_path / "no_data"
    empty.mkdir()
    if command == "evaluate":
        out = blocker / "r.json"
        r = invoke(runner, ["evaluate", "--model", tiny_model, "--forget-label", 1, "--json", out, "--data-dir", empty])
        refused(r, "is a file")
    else:
        out = blocker / "run"
        r = invoke(runner, ["remove-class", "--label", 1, "--model", tiny_model, "--out-dir", out, "--data-dir", empty,
                            "--device", "cpu"])
        refused(r, "is a file")


@pytest.mark.parametrize("text, needle", [
    ("max_iter: three\n", "max_iter: 'three' is not an integer"),
    ("tol: [1, 2]\n", "tol: a list"),
    ("forget_label: 1.5\n", "forget_label: 1.5 is not an integer"),
    ("svc: maybe\n", "svc: 'maybe' is not true or false"),
    ("colour: red\n", "unknown keys colour"),
    ("a: &a [x, x]\nb: &b [*a, *a]\nmethods: *b\n", "anchors or aliases"),
])
def test_a_compare_config_is_checked_like_the_command_line(runner, tiny_model, fake_mnist, tmp_path, text, needle):
    """A YAML key is read as its option: the wrong type, an unknown key or an alias bomb is a usage error
    (exit 2) naming the key and the value, before any work, and no folder is made."""
    config = tmp_path / "c.yaml"
    config.write_text(f"forget_label: 1\n{text}" if "forget_label" not in text else text)
    out = tmp_path / "out"
    r = invoke(runner, ["compare", "--config", config, "--model", tiny_model, "--out-dir", out, "--data-dir",
                        fake_mnist, "--device", "cpu"])
    refused(r, needle, code=2)
    assert not out.exists()


def test_a_compare_config_may_give_a_number_where_text_is_parsed(runner, tiny_model, fake_mnist, tmp_path):
    """`scale: 1` (a number, the option is parsed from text) and `svc: false` are taken as the command line
    would take --scale 1 and --no-svc."""
    from gifcli.cli.compare import compare_config

    config = tmp_path / "c.yaml"
    config.write_text("forget_label: 1\nscale: 1\nsvc: false\nratios: [0.1, 0.3]\n")
    cfg = compare_config(config, {"svc": None})
    assert cfg["scale"] == "1" and cfg["svc"] is False and cfg["ratios"] == "0.1,0.3" and cfg["forget_label"] == 1


def test_a_second_run_into_a_folder_in_use_is_refused(runner, tiny_model, fake_mnist, tmp_path):
    """While one gif run owns a run folder (here: its lock held as a running remove-class holds it), a second
    run into the same folder is refused at once, one line, and writes nothing there; once the first is done,
    the folder is free again and the lock file is gone."""
    from gifcli.io.files import folder_lock

    folder = tmp_path / "run"
    args = ["remove-class", "--label", 1, "--model", tiny_model, "--out-dir", folder, "--data-dir", fake_mnist,
            "--device", "cpu", "--hessian-samples", 16]
    with folder_lock(folder):
        r = invoke(runner, args)
        refused(r, "in use by another gif run")
        assert not folder.exists()
    assert not list(tmp_path.glob(".*gif-lock"))
    r = invoke(runner, args)
    assert r.exit_code == 0, r.output
    assert (folder / "report.json").exists() and not list(tmp_path.glob(".*gif-lock"))


@pytest.mark.parametrize("what", ["store", "out-dir"])
def test_an_audit_store_or_folder_in_use_or_blocked_is_refused_before_any_work(runner, tiny_config, fake_mnist,
                                                                             tmp_path, what):
    """The audit's model store and its output folder belong to one run at a time, and an output under a
    regular file is refused before the first model is trained (here the data folder is empty, so any
    work would fail on that first)."""
    from gifcli.io.files import folder_lock

    forget = tmp_path / "forget.json"
    r = invoke(runner, ["forget-set", "--dataset", "mnist", "--random", 10, "--out", forget, "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    empty = tmp_path / "no_data"
    empty.mkdir()
    store, folder = tmp_path / "store", tmp_path / "audit"
    args = ["audit", "--config", tiny_config, "--forget", forget, "--models", 3, "--store", store, "--out-dir", folder,
            "--data-dir", empty, "--device", "cpu", "--no-plot"]
    with folder_lock(store if what == "store" else folder):
        refused(invoke(runner, args), "in use by another gif run")
    assert not store.exists() and not folder.exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    blocked = [a if a not in (store, folder) or (a == store) != (what == "store") else blocker / "x" for a in args]
    refused(invoke(runner, blocked), "is a file")
    assert not store.exists() and not folder.exists()


@pytest.mark.parametrize("text, needle", [
    ("epochs: three\n", "epochs: 'three' is not an integer"),
    ("batch_size: 1.5\n", "batch_size: 1.5 is not an integer"),
    ("lr: fast\n", "lr: 'fast' is not a number"),
    ("milestones: [3, x]\n", "milestones"),
    ("seed: true\n", "seed: True is not an integer"),
    ("a: &a [x, x]\nb: &b [*a, *a]\nepochs: 1\n", "anchors or aliases"),
])
def test_a_training_config_is_checked_like_the_command_line(runner, fake_mnist, tmp_path, text, needle):
    """gif train's YAML: a value of the wrong kind is a usage error naming the key and the value, and YAML
    aliases are refused unexpanded, before any data is read; nothing is written."""
    config = tmp_path / "t.yaml"
    config.write_text("model: mlp\ndataset: mnist\n" + text)
    out = tmp_path / "m.safetensors"
    r = invoke(runner, ["train", "--config", config, "--out", out, "--data-dir", fake_mnist, "--device", "cpu"])
    refused(r, needle, out, code=2)
