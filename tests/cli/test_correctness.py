"""Wrong model files and data files named for what is wrong, and what an import says it assumed."""
import json

import pytest
import torch

from gifcli import load_checkpoint
from gifcli.core.metrics import svc_mia_shares
from gifcli.core.args import Runtime
from gifcli.data.datasets import DatasetSpec, load_data
from gifcli.data.tensorfile import write_tensors
from gifcli.io.checkpoint import save_checkpoint
from tests.userdata import digits, train_plain, write_image_folder, write_user_module

from .conftest import invoke, refused

CLASSES = ["one", "seven", "zero"]


@pytest.fixture(scope="module")
def user(tmp_path_factory, fake_mnist):
    root = tmp_path_factory.mktemp("wrong")
    module = write_user_module(root / "usermodels")
    arrays = digits(fake_mnist, per_class_train=40, per_class_test=10, labels=[1, 7, 0])
    folder = write_image_folder(root / "digits", arrays, CLASSES)
    import importlib.util

    spec = importlib.util.spec_from_file_location("netdef_wrong", module)
    netdef = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(netdef)
    torch.manual_seed(0)
    five = netdef.build(classes=5)
    torch.save(five.state_dict(), root / "five.pt")
    x, y = arrays["train"]
    three = train_plain(netdef.build(classes=3), (x.float().unsqueeze(1) / 255 - 0.5) / 0.5, y, epochs=2)
    torch.save(three.state_dict(), root / "three.pt")
    return {"root": root, "module": module, "folder": folder, "netdef": netdef}


def test_import_refuses_a_model_with_more_outputs_than_the_data_has_classes(runner, user, tmp_path):
    out = tmp_path / "five.safetensors"
    r = invoke(runner, ["import", "--arch", f"{user['module']}:build", "--arch-kwargs", '{"classes": 5}',
                        "--weights", user["root"] / "five.pt", "--dataset", f"imagefolder:{user['folder']}",
                        "--out", out, "--device", "cpu"])
    refused(r, "3 classes", out)
    assert "(2, 5)" in r.output


def test_train_refuses_an_architecture_with_the_wrong_number_of_outputs(runner, user, tmp_path):
    out = tmp_path / "trained.safetensors"
    r = invoke(runner, ["train", "--arch", f"{user['module']}:build", "--arch-kwargs", '{"classes": 5}',
                        "--dataset", f"imagefolder:{user['folder']}", "--epochs", 1, "--out", out, "--device", "cpu"])
    refused(r, "3 classes", out)


def test_evaluate_refuses_a_checkpoint_whose_model_gives_the_wrong_number_of_outputs(runner, user, tmp_path):
    """A checkpoint that records 3 classes but whose architecture builds 5 outputs (an older file,
    or one written by hand) is refused when it is used, not scored."""
    good = tmp_path / "three.safetensors"
    r = invoke(runner, ["import", "--arch", f"{user['module']}:build", "--arch-kwargs", '{"classes": 3}',
                        "--weights", user["root"] / "three.pt", "--dataset", f"imagefolder:{user['folder']}",
                        "--mean", "0.5", "--std", "0.5", "--out", good, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    _, meta = load_checkpoint(good)
    assert meta["num_classes"] == 3
    bad = tmp_path / "bad.safetensors"
    torch.manual_seed(0)
    save_checkpoint(bad, user["netdef"].build(classes=5), {**meta, "arch_kwargs": {"classes": 5}})
    r = invoke(runner, ["evaluate", "--model", bad, "--device", "cpu", "--no-mia"])
    refused(r, "3 classes")


def test_import_says_which_normalisation_it_measured_with(runner, user, tmp_path):
    """Without --mean/--std the normalisation is computed from the images: the output names it,
    says a model trained with another one must be given it, and prints the accuracy beside it."""
    args = ["import", "--arch", f"{user['module']}:build", "--arch-kwargs", '{"classes": 3}', "--weights",
            user["root"] / "three.pt", "--dataset", f"imagefolder:{user['folder']}", "--device", "cpu"]
    r = invoke(runner, [*args, "--out", tmp_path / "guessed.safetensors"])
    assert r.exit_code == 0, r.output
    _, meta = load_checkpoint(tmp_path / "guessed.safetensors")
    mean = meta["dataset"]["mean"][0]
    assert abs(mean - 0.5) > 0.1  # the images' own statistics, not the 0.5 the model was trained with
    line = next(line for line in r.output.splitlines() if line.startswith("normalisation"))
    assert f"mean {mean:.4g}" in line and "computed from the training images" in line and "--mean/--std" in line
    assert f"{100 * meta['test_accuracy']:.2f}%" in line
    r = invoke(runner, [*args, "--mean", "0.5", "--std", "0.5", "--out", tmp_path / "given.safetensors"])
    assert r.exit_code == 0, r.output
    line = next(line for line in r.output.splitlines() if line.startswith("normalisation"))
    assert "mean 0.5, std 0.5 (given)" in line and "computed" not in line


def test_a_tensors_label_out_of_range_is_named_as_such(tmp_path):
    path = tmp_path / "t.safetensors"
    x = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    write_tensors(path, x, torch.tensor([0, 1, 2, 8, 1, 0]), x.clone(), torch.tensor([0, 1, 2, 0, 1, 2]),
                  classes=["a", "b", "c"])
    with pytest.raises(Exception) as info:
        load_data(DatasetSpec.parse(f"tensors:{path}"))
    message = str(info.value)
    assert "train_y[3] = 8" in message and "3 classes" in message and "at least" not in message


def test_the_svc_attack_has_nothing_to_fit_on_an_empty_member_or_non_member_set(fake_mnist):
    data = load_data(DatasetSpec.parse("mnist"), str(fake_mnist))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    empty = data.fit.where(torch.zeros(len(data.fit), dtype=torch.bool))
    rt = Runtime()
    for members, nonmembers in ((empty, data.test_split), (data.fit, empty)):
        out = svc_mia_shares(model, members, nonmembers, {"forget": data.fit}, rt, samples=50)
        assert out["forget"] and all(v is None for v in out["forget"].values())
    out = svc_mia_shares(model, data.fit, data.test_split, {"forget": data.fit}, rt, samples=50)
    assert all(0.0 <= v <= 1.0 for v in out["forget"].values())
    json.dumps(out)  # a report can hold it
