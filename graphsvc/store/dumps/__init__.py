"""Reading and writing `arangodump` directories, and the pieces a restore keeps between runs.

A dump directory holds, per collection, a `*.structure.json` (name, type, indexes) and
zero or more data files with one JSON value per line, optionally gzip-compressed and split
into numbered parts (`layout`). Data files have one reader, `iter_line_blocks` (`blocks`):
restores turn its blocks into Arrow-backed upserts and removals with `parse_block`
(`parse`, read ahead in threads by `pipeline`), and `iter_operations` (`operations`) applies
the same line rules one operation at a time (named graphs, tests). Memory stays bounded by
one block of lines, never by the size of a data file. `write` writes dumps; `progress` and
`rejects` hold what a restore keeps between runs.
"""

from graphsvc.store.dumps.blocks import DEFAULT_BLOCK_BYTES, DEFAULT_BLOCK_LINES, LineBlock, iter_line_blocks
from graphsvc.store.dumps.graphs import GRAPHS_COLLECTION, read_graphs
from graphsvc.store.dumps.layout import Dump, DumpCollection, open_dump
from graphsvc.store.dumps.operations import DumpOperation, iter_operations
from graphsvc.store.dumps.parse import ParsedBlock, RejectedLine, Removals, Upserts, parse_block
from graphsvc.store.dumps.pipeline import parsed_blocks
from graphsvc.store.dumps.progress import RestoreProgress, progress_key
from graphsvc.store.dumps.rejects import REJECTS_FILE_NAME, RejectsFile, default_rejects_file
from graphsvc.store.dumps.write import dump_being_built, write_dump, write_graphs, write_structure

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "DEFAULT_BLOCK_LINES",
    "GRAPHS_COLLECTION",
    "REJECTS_FILE_NAME",
    "Dump",
    "DumpCollection",
    "DumpOperation",
    "LineBlock",
    "ParsedBlock",
    "RejectedLine",
    "RejectsFile",
    "Removals",
    "RestoreProgress",
    "Upserts",
    "default_rejects_file",
    "dump_being_built",
    "iter_line_blocks",
    "iter_operations",
    "open_dump",
    "parse_block",
    "parsed_blocks",
    "progress_key",
    "read_graphs",
    "write_dump",
    "write_graphs",
    "write_structure",
]
