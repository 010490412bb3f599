"""gif ledger: deletion requests over time, on tiny data."""
import json
import sqlite3
import subprocess
import sys

import pytest

from gifcli.errors import ChainBroken

from .conftest import invoke


def forget_file(runner, fake_mnist, tmp_path, name, indices):
    (tmp_path / f"{name}.txt").write_text("".join(f"{i}\n" for i in indices))
    out = tmp_path / f"{name}.json"
    r = invoke(runner, ["forget-set", "--dataset", "mnist", "--indices", tmp_path / f"{name}.txt", "--out", out,
                        "--data-dir", fake_mnist])
    assert r.exit_code == 0, r.output
    return out


FAST = ["--method", "gif", "--hessian-samples", 16, "--max-iter", 5, "--device", "cpu"]


@pytest.fixture
def ledger(runner, tiny_model, tmp_path):
    path = tmp_path / "requests.ledger"
    r = invoke(runner, ["ledger", "create", "--ledger", path, "--model", tiny_model])
    assert r.exit_code == 0, r.output
    return path


def fit_indices(fake_mnist, n, start=0):
    from gifcli.data.datasets import DatasetSpec, load_data

    data = load_data(DatasetSpec.parse("mnist"), str(fake_mnist))
    return data.fit_indices.sort().values[start:start + n].tolist()


def test_three_requests_status_verify_retrain_verify(runner, ledger, fake_mnist, tmp_path):
    ids = fit_indices(fake_mnist, 30)
    for k in range(3):
        f = forget_file(runner, fake_mnist, tmp_path, f"r{k}", ids[10 * k:10 * k + 10])
        r = invoke(runner, ["ledger", "forget", "--ledger", ledger, "--forget", f, "--request", f"req-{k}",
                            "--data-dir", fake_mnist, *FAST])
        assert r.exit_code == 0, r.output
        assert f"row {k + 2}: request 'req-{k}', 10 samples forgotten" in r.output
    status = tmp_path / "status.json"
    r = invoke(runner, ["ledger", "status", "--ledger", ledger, "--json", status])
    assert r.exit_code == 0, r.output
    st = json.loads(status.read_text())
    assert st["forgotten"] == 30 and st["since_trained"] == 30 and len(st["events"]) == 4
    assert [e["parent"] for e in st["events"]] == [None, 1, 2, 3]
    # each edit's data left out every sample forgotten before it: its Hessian pool shrank by 10 each time
    pools = [json.loads((ledger.parent / e["folder"] / "report.json").read_text())["influence"]["hessian"]["pool_size"]
             for e in st["events"][1:]]
    assert pools[0] - pools[1] == 10 and pools[1] - pools[2] == 10
    r = invoke(runner, ["ledger", "verify", "--ledger", ledger])
    assert r.exit_code == 0 and "4 rows in one line" in r.output and "30 samples" in r.output, r.output
    r = invoke(runner, ["ledger", "retrain", "--ledger", ledger, "--device", "cpu", "--data-dir", fake_mnist])
    assert r.exit_code == 0 and "without the 30 forgotten" in r.output, r.output
    r = invoke(runner, ["ledger", "verify", "--ledger", ledger])
    assert r.exit_code == 0 and "5 rows in one line" in r.output, r.output
    st = json.loads((lambda: (invoke(runner, ["ledger", "status", "--ledger", ledger, "--json", status]),
                              status.read_text())[1])())
    assert st["since_trained"] == 0 and st["events"][-1]["kind"] == "retraining"
    export = tmp_path / "export.json"
    assert invoke(runner, ["ledger", "export", "--ledger", ledger, "--out", export]).exit_code == 0
    doc = json.loads(export.read_text())
    first = doc["requests"][0]
    assert first["request"] == "req-0" and len(first["carried_by"]) == 1 and len(first["no_longer_in"]) == 4


def test_verify_finds_a_tampered_checkpoint_and_an_edited_row(runner, ledger, fake_mnist, tmp_path):
    from gifcli.pipelines.ledger import Ledger

    ids = fit_indices(fake_mnist, 20)
    for k in range(2):
        f = forget_file(runner, fake_mnist, tmp_path, f"t{k}", ids[10 * k:10 * k + 10])
        r = invoke(runner, ["ledger", "forget", "--ledger", ledger, "--forget", f, "--request", f"t{k}",
                            "--data-dir", fake_mnist, *FAST])
        assert r.exit_code == 0, r.output
    lg = Ledger(ledger)
    assert lg.verify().checked
    # an edited row: the triggers refuse it, so a tamperer drops them first
    db = sqlite3.connect(ledger)
    with pytest.raises(sqlite3.DatabaseError, match="never rewritten"):
        db.execute("UPDATE events SET request = 'other' WHERE id = 2")
    db.execute("DROP TRIGGER no_update")
    body = json.loads(db.execute("SELECT body FROM events WHERE id = 2").fetchone()[0])
    body["forget"]["count"] = 9
    db.execute("UPDATE events SET body = ? WHERE id = 2", (json.dumps(body, sort_keys=True),))
    db.commit()
    r = invoke(runner, ["ledger", "verify", "--ledger", ledger])
    assert r.exit_code == 1 and "row 2 (edit t0) was changed after it was written" in r.output, r.output
    body["forget"]["count"] = 10
    db.execute("UPDATE events SET body = ? WHERE id = 2", (json.dumps(body, sort_keys=True),))
    db.commit()
    db.close()
    Ledger(ledger).verify()
    # a tampered checkpoint: one weight changed, the file rewritten
    edited = ledger.parent / Ledger(ledger).events()[2].checkpoint
    blob = bytearray(edited.read_bytes())
    blob[-3] ^= 0x01
    edited.write_bytes(bytes(blob))
    with pytest.raises(ChainBroken, match="row 3"):
        Ledger(ledger).verify()
    r = invoke(runner, ["ledger", "verify", "--ledger", ledger])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1


def test_bad_requests_are_refused_in_one_line(runner, ledger, tiny_model, fake_mnist, tmp_path):
    ids = fit_indices(fake_mnist, 12)
    f = forget_file(runner, fake_mnist, tmp_path, "a", ids[:10])
    ok = invoke(runner, ["ledger", "forget", "--ledger", ledger, "--forget", f, "--request", "a",
                         "--data-dir", fake_mnist, *FAST])
    assert ok.exit_code == 0, ok.output
    again = forget_file(runner, fake_mnist, tmp_path, "b", ids[9:12])
    cases = [
        (["--forget", again, "--request", "b"], f"sample {ids[9]} was forgotten already (request 'a')", 2),
        (["--forget", f, "--request", "a"], "request 'a' is in the ledger already", 2),
        (["--forget", again, "--request", "c", "--model", tiny_model], "not the ledger's head", 2),
    ]
    for extra, needle, code in cases:
        r = invoke(runner, ["ledger", "forget", "--ledger", ledger, *extra, "--data-dir", fake_mnist, *FAST])
        assert r.exit_code == code and needle in r.output and len(r.output.strip().splitlines()) == 1, r.output
    other = json.loads(forget_file(runner, fake_mnist, tmp_path, "fresh", ids[10:12]).read_text())
    other["dataset"]["fingerprint"]["train_count"] += 1  # a forget set made on other data
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(other))
    r = invoke(runner, ["ledger", "forget", "--ledger", ledger, "--forget", other_path, "--request", "d",
                        "--data-dir", fake_mnist, *FAST])
    assert r.exit_code == 1 and "forget set" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    not_ledger = tmp_path / "x.ledger"
    not_ledger.write_text("not sqlite")
    truncated = tmp_path / "t.ledger"
    truncated.write_bytes(ledger.read_bytes()[:1000])
    for bad in (not_ledger, truncated, tmp_path / "missing.ledger"):
        r = invoke(runner, ["ledger", "status", "--ledger", bad])
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    r = invoke(runner, ["ledger", "create", "--ledger", ledger, "--model", tiny_model])
    assert r.exit_code == 2 and "exists" in r.output
    # nothing half-written: the refused requests left no row and no run folder
    from gifcli.pipelines.ledger import Ledger

    assert len(Ledger(ledger).events()) == 2
    assert len([p for p in Ledger(ledger).store.iterdir() if p.is_dir()]) == 1


def test_an_interrupted_request_leaves_no_row_and_no_folder(runner, ledger, fake_mnist, tmp_path, monkeypatch):
    """Ctrl-C after the edit's files were written but before its row: one line, exit 130, the run folder
    gone, the chain as it was; the same request then goes through."""
    from gifcli.pipelines.ledger import Ledger

    f = forget_file(runner, fake_mnist, tmp_path, "i", fit_indices(fake_mnist, 5))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Ledger, "diagnostics", interrupted)
        r = invoke(runner, ["ledger", "forget", "--ledger", ledger, "--forget", f, "--request", "i",
                            "--data-dir", fake_mnist, *FAST])
    assert r.exit_code == 130 and len(r.output.strip().splitlines()) == 1, r.output
    lg = Ledger(ledger)
    assert len(lg.events()) == 1 and not [p for p in lg.store.iterdir() if p.is_dir()]
    r = invoke(runner, ["ledger", "forget", "--ledger", ledger, "--forget", f, "--request", "i",
                        "--data-dir", fake_mnist, *FAST])
    assert r.exit_code == 0, r.output
    lg.verify()


WORKER = """
import sys, torch
from gifcli.pipelines.ledger import Ledger
from gifcli.core.args import Runtime, UnlearnArgs
from gifcli.data.forget import ForgetSet
ledger, worker, data_dir, ids = sys.argv[1], int(sys.argv[2]), sys.argv[3], [int(x) for x in sys.argv[4].split(",")]
args = UnlearnArgs("grad", scales=(0.1,))
rt = Runtime(batch_size=512)
lg = Ledger(ledger)
for k, i in enumerate(ids):
    lg.forget(ForgetSet(torch.tensor([i]), source=f"w{worker}-{k}"), f"w{worker}-{k}", args, rt, data_dir)
"""


def test_four_processes_fifty_requests_each_make_one_line(ledger, fake_mnist):
    """Four processes forgetting at once: 200 edit rows in one linear chain, every request once, verify passing."""
    from gifcli.pipelines.ledger import Ledger

    ids = fit_indices(fake_mnist, 200)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(ledger), str(w), str(fake_mnist),
                               ",".join(map(str, ids[50 * w:50 * w + 50]))],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for w in range(4)]
    for p in procs:
        output = p.communicate(timeout=900)[0].decode()
        assert p.returncode == 0, output[-2000:]
    lg = Ledger(ledger)
    events = lg.events()
    edits = [e for e in events if e.kind == "edit"]
    assert len(edits) == 200 and sorted(e.request for e in edits) == sorted(f"w{w}-{k}" for w in range(4) for k in range(50))
    assert [e.parent for e in events] == [None] + [e.id for e in events[:-1]]
    assert len(lg.forgotten()) == 200
    lg.verify()
