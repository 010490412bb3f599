import json
import math
import os

import pytest
import torch

from gifcli.errors import GifError, InputFileError, NonFiniteError
from gifcli.io.artifacts import _ranges, index_sha256, mask_document, parse_mask
from gifcli.io.files import atomic_path, read_json, sha256_tensors, write_json
from gifcli.math.params import IndexSet, ParamSpace


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_write_replaces_only_on_success_with_usual_permissions(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_strict_json_refuses_non_finite_numbers_naming_the_key(tmp_path):
    with pytest.raises(NonFiniteError, match=r"rows\[1\].loss"):
        write_json(tmp_path / "r.json", {"rows": [{"loss": 1.0}, {"loss": math.nan}]})
    assert not (tmp_path / "r.json").exists()
    (tmp_path / "nan.json").write_text('{"loss": NaN}')
    with pytest.raises(InputFileError):
        read_json(tmp_path / "nan.json", "report")


def test_sha256_tensors_is_order_independent_and_sensitive():
    a = {"w": torch.ones(3), "b": torch.zeros(2)}
    b = {"b": torch.zeros(2), "w": torch.ones(3)}
    assert sha256_tensors(a) == sha256_tensors(b)
    changed = {"w": torch.tensor([1.0, 1.0, 1.0 + 2 ** -20]), "b": torch.zeros(2)}
    assert sha256_tensors(changed) != sha256_tensors(a)
    assert sha256_tensors({"w": torch.ones(3, dtype=torch.float64), "b": torch.zeros(2)}) != sha256_tensors(a)
    assert sha256_tensors({"w": torch.ones(1, 3), "b": torch.zeros(2)}) != sha256_tensors(a)


def test_ranges_are_half_open_runs():
    m = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 1], dtype=torch.bool)
    assert _ranges(m) == [[1, 3], [4, 5], [7, 10]]
    assert _ranges(torch.zeros(4, dtype=torch.bool)) == []
    assert _ranges(torch.ones(3, dtype=torch.bool)) == [[0, 3]]


def test_mask_document_round_trips_through_the_checks():
    space = ParamSpace(("w", "b"), ((3, 4), (3,)))
    J = IndexSet.from_indices(space, torch.tensor([0, 1, 2, 3, 9, 12, 14]))
    doc = json.loads(json.dumps(mask_document(J, "abc", {"criterion": "random"})))
    back = parse_mask(doc, "m.json", space, "abc")
    assert torch.equal(back.indices, J.indices) and doc["index_sha256"] == index_sha256(J)
    assert doc["parameters"][0]["ranges"] == [[0, 4], [9, 10]] and doc["parameters"][1]["ranges"] == [[0, 1], [2, 3]]
    with pytest.raises(InputFileError, match="another model"):
        parse_mask(doc, "m.json", space, "xyz")


def test_refuses_to_replace_what_is_not_a_regular_file(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(GifError, match="folder"):
        write_json(tmp_path / "d", {})
