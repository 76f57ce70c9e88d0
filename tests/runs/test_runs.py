import numpy as np

from graphsvc.runs import RunJournal


def test_journal_keeps_batches_and_treats_an_unreadable_one_as_not_done(tmp_path):
    journal = RunJournal(tmp_path / "run")
    journal.save("L0-B0", np.arange(6, dtype=np.float32).reshape(2, 3))
    journal.save("T-B0", {"a": np.ones(2), "b": np.zeros(3)})
    again = RunJournal(tmp_path / "run")
    assert again.load("L0-B0").tolist() == [[0, 1, 2], [3, 4, 5]]
    assert sorted(again.load("T-B0")) == ["a", "b"]
    assert again.load("L0-B1") is None and again.reused == 2

    # what a machine crash can leave of a file that was never fsynced: cut short
    path = tmp_path / "run" / "L0-B0.npy"
    path.write_bytes(path.read_bytes()[:40])
    (tmp_path / "run" / "T-B0.npz").write_bytes(b"")
    third = RunJournal(tmp_path / "run")
    assert third.load("L0-B0") is None and not path.exists()
    assert third.load("T-B0") is None and not (tmp_path / "run" / "T-B0.npz").exists()
    assert third.reused == 0
    assert not list((tmp_path / "run").glob(".*"))  # no temporary files left
