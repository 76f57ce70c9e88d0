"""graphsvc.store.dumps.blocks: data files as blocks of at most the requested number of lines."""

from __future__ import annotations

import pytest

from graphsvc.store.dumps import iter_line_blocks, open_dump, parse_block
from tests.store.dumps.dump_files import fixture_dir, write_lines


def test_seed_workshop_batches():
    dump = open_dump(fixture_dir("seed_workshop_dump"))
    (path,) = dump.collection("Users").data_files
    sizes = [parse_block(b, "document").lines_read for b in iter_line_blocks(path, max_lines=300)]
    assert sizes == [300, 300, 300, 43]


def test_batches_reject_nonpositive_size(tmp_path):
    path = write_lines(tmp_path / "C.data.json", ['{"_key":"a"}'])
    with pytest.raises(ValueError):
        next(iter_line_blocks(path, max_lines=0))
