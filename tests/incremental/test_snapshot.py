import numpy as np
import pyarrow as pa

from graphsvc.incremental.slots import plan_slots
from graphsvc.incremental.snapshot import SNAPSHOT_CURRENT, Snapshot, replaced_since


def test_a_saved_snapshot_loads_back_and_replaces_the_previous_one(tmp_path):
    assert Snapshot.load(tmp_path) is None
    first = Snapshot.save(tmp_path, {"index_version": 1}, pa.array(["a", "b"]), {"h1": np.ones((2, 3), np.float32)})
    second = Snapshot.save(tmp_path, {"index_version": 2}, pa.array(["a", "b", "c"]),
                           {"h1": np.zeros((3, 3), np.float32)}, revisions=pa.array(["r1", "r2", "r3"]))
    loaded = Snapshot.load(tmp_path)
    assert loaded.id == second.id != first.id and loaded.meta == {"index_version": 2}
    assert loaded.keys.to_pylist() == ["a", "b", "c"] and loaded.revisions.to_pylist() == ["r1", "r2", "r3"]
    assert loaded.array("h1").shape == (3, 3) and loaded.array("h2") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([SNAPSHOT_CURRENT, second.id])


def test_replaced_since_names_documents_whose_revision_changed(tmp_path):
    snapshot = Snapshot.save(tmp_path, {}, pa.array(["a", "b", "c"]), {}, revisions=pa.array(["1", "1", "1"]))
    plan = plan_slots(snapshot.keys, pa.array(["c", "a", "b", "d"]))  # slots a, b, c, d
    revisions = pa.array(["1", "2", "1", "1"])  # b replaced; d is new
    assert replaced_since(snapshot, plan, revisions).tolist() == [False, True, False, False]
    assert not replaced_since(snapshot, plan, None).any()  # a store without revisions
    assert not replaced_since(None, plan, revisions).any()
