"""`jobs restore-dumps`: arangodump directories → the store, without `arangorestore`.

Recipe, per selected collection: (drop it when overwriting) → create it → stream each
data file in blocks of lines, each block parsed to Arrow in C++ and written together with
the restore's progress (file and last line) in one transaction → indexes from the
structure file. Then: dangling-edge checks, named graphs from `_graphs`, the summary.

One pass over the data, memory bounded by the block size. A bad line stops the restore
(default) with everything before it committed; `resume=True` continues after the last
committed line, so nothing is written twice or lost. `on_error="skip"` writes bad lines
to a rejects file instead and goes on.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence

import pyarrow.compute as pc

from graphsvc.errors import ConfigError, DumpFormatError, GraphsvcError
from graphsvc.store import is_server_url
from graphsvc.store.base import GraphInfo, GraphStore
from graphsvc.store.dumps import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_BLOCK_LINES,
    GRAPHS_COLLECTION,
    Dump,
    DumpCollection,
    ParsedBlock,
    RejectedLine,
    RejectsFile,
    Removals,
    RestoreProgress,
    Upserts,
    default_rejects_file,
    open_dump,
    parsed_blocks,
    progress_key,
    read_graphs,
)
from graphsvc.store.dumps.operations import message_of

OnError = Literal["stop", "skip"]
# collection properties of a structure file a restore passes on, as arangorestore does
# (the store keeps those in its `collection_properties`; the summary names the others)
RESTORED_PROPERTIES = ("keyOptions", "shardKeys", "numberOfShards", "replicationFactor", "writeConcern",
                       "schema", "computedValues", "shardingStrategy")
_FIRST_BLOCK_LINES = 4_096  # blocks grow from this to --batch-size, so parsing and writing overlap early


@dataclass
class CollectionSummary:
    dump: str
    collection: str
    kind: str
    read: int = 0  # non-blank data lines, rejected ones included
    written: int = 0  # documents inserted or replaced
    skipped: int = 0  # lines rejected (--on-error skip) or found invalid (dry run)
    removed: int = 0  # documents removed by 2302 markers
    status: str = "restored"
    indexes: list[dict] = field(default_factory=list)
    dangling_edges: dict | None = None  # edge collections: {"count", "examples"}
    resumed_from: dict | None = None  # {"file", "line"} when --resume picked up earlier progress
    seconds: float = 0.0


@dataclass
class RestoreSummary:
    collections: list[CollectionSummary] = field(default_factory=list)
    graphs: list[str] = field(default_factory=list)
    skipped_system: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rejects_file: str | None = None
    dry_run: bool = False
    seconds: float = 0.0
    read_this_run: int = 0  # lines read by this run (a resumed restore counts earlier runs in `read`)

    @property
    def totals(self) -> dict:
        rows = self.collections
        return {
            "collections": len(rows),
            "read": sum(r.read for r in rows),
            "read_this_run": self.read_this_run,
            "written": sum(r.written for r in rows),
            "skipped": sum(r.skipped for r in rows),
            "removed": sum(r.removed for r in rows),
            "dangling_edges": sum((r.dangling_edges or {}).get("count", 0) for r in rows),
            "seconds": round(self.seconds, 3),
            "lines_per_second": round(self.read_this_run / self.seconds) if self.seconds > 0 else None,
        }

    def to_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "collections": [asdict(c) for c in self.collections],
            "totals": self.totals,
            "graphs": self.graphs,
            "skipped_system_collections": self.skipped_system,
            "rejects_file": self.rejects_file,
            "warnings": self.warnings,
        }


# ------------------------------------------------------------------------------ selection


def _open_dumps(directories: Sequence[Path]) -> list[Dump]:
    # every dump is opened (layout and encryption checked) before anything is written
    return [open_dump(directory) for directory in directories]


def _selected(
    dumps: list[Dump],
    summary: RestoreSummary,
    collections: Sequence[str],
    exclude: Sequence[str],
    include_system_collections: bool,
) -> list[tuple[Dump, DumpCollection]]:
    """What to restore, like arangorestore: `collections` (when given) limits the choice,
    `exclude` removes names; system collections need `include_system_collections` or an
    explicit `--collection`. `_graphs` becomes named graphs, not a collection."""
    wanted, excluded = set(collections), set(exclude)
    present = {c.name for d in dumps for c in d.collections}
    unknown = sorted(wanted - present)
    if unknown:
        raise ConfigError(
            f"--collection {', '.join(unknown)}: not in the dump(s); "
            f"they hold {', '.join(sorted(present)) or 'nothing'}"
        )
    for name in sorted(excluded - present):
        summary.warnings.append(f"--exclude {name}: no such collection in the dump(s)")
    chosen = []
    for dump in dumps:
        for collection in dump.collections:
            name = collection.name
            if (wanted and name not in wanted) or name in excluded:
                continue
            if collection.is_system and not include_system_collections and name not in wanted:
                if name != GRAPHS_COLLECTION:
                    summary.skipped_system.append(name)
                continue
            chosen.append((dump, collection))
    return chosen


def _restores_graphs(collections: Sequence[str], exclude: Sequence[str]) -> bool:
    return GRAPHS_COLLECTION not in exclude and (not collections or GRAPHS_COLLECTION in collections)


# ------------------------------------------------------------------------------ restore


def restore_dumps(
    store: GraphStore,
    directories: Sequence[Path],
    batch_size: int = DEFAULT_BLOCK_LINES,
    include_system_collections: bool = False,
    on_progress: Callable[[str, int], None] | None = None,
    *,
    collections: Sequence[str] = (),
    exclude: Sequence[str] = (),
    overwrite: bool = False,
    resume: bool = False,
    on_error: OnError = "stop",
    rejects_file: Path | None = None,
    threads: int = 1,
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> RestoreSummary:
    """Restore arangodump `directories` into `store` and say what happened.

    Raises DumpFormatError (file and line) on a bad dump or line when `on_error="stop"`;
    what was written before stays, and `resume=True` continues from there. `threads` > 1
    restores several collections at once on stores that take concurrent writers (ArangoDB);
    the embedded store has one writer, so it restores one collection at a time.
    """
    if on_error not in ("stop", "skip"):
        raise ConfigError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    summary = RestoreSummary()
    dumps = _open_dumps([Path(d) for d in directories])
    chosen = _selected(dumps, summary, collections, exclude, include_system_collections)
    rejects = None
    if on_error == "skip":
        path = Path(rejects_file) if rejects_file else default_rejects_file(getattr(store, "url", None))
        rejects = RejectsFile(path, append=resume)
        summary.rejects_file = str(path)
    restorer = _Restorer(store, summary, batch_size, max_block_bytes, overwrite, resume, on_error, rejects, on_progress)
    try:
        workers = threads if threads > 1 and _takes_concurrent_writers(store) else 1
        rows = restorer.run(chosen, workers)
    finally:
        if rejects is not None:
            rejects.close()
    summary.collections = rows
    for row in rows:
        if row.kind == "edge":
            dangling = store.dangling_edges(row.collection)
            row.dangling_edges = {"count": dangling.count, "examples": list(dangling.examples)}
    if _restores_graphs(collections, exclude):
        left_out = {c.name for d in dumps for c in d.collections} - {c.name for _d, c in chosen}
        for dump in dumps:
            for graph in read_graphs(dump):
                if _create_graph(store, graph, left_out, summary):
                    summary.graphs.append(graph.name)
    summary.seconds = time.perf_counter() - started
    return summary


def _create_graph(store: GraphStore, graph: GraphInfo, left_out: set[str], summary: RestoreSummary) -> bool:
    """The named graph, unless it names collections that --collection/--exclude left out
    and the store does not have: creating it would create them empty (ArangoDB's gharial
    does), which arangorestore never does."""
    missing = [name for name in graph.collection_names if name in left_out and not store.has_collection(name)]
    if missing:
        summary.warnings.append(
            f"graph '{graph.name}' not created: it needs {', '.join(missing)}, which this restore left out — "
            "restore them too (--collection) and run again"
        )
        return False
    if graph.orphan_collections and not store.keeps_orphan_collections:
        summary.warnings.append(
            f"graph '{graph.name}': this store keeps no orphan collections ({', '.join(graph.orphan_collections)})"
        )
    store.create_graph(graph)
    return True


def _takes_concurrent_writers(store: GraphStore) -> bool:
    """Stores that gain from writing several collections at once (ArangoDB). The embedded
    store has one writer per file; DuckDB parallelises each write internally instead."""
    declared = getattr(store, "concurrent_writers", None)
    if declared is not None:
        return bool(declared)
    return is_server_url(getattr(store, "url", "") or "")


class _Restorer:
    def __init__(self, store, summary, batch_size, max_block_bytes, overwrite, resume, on_error, rejects, on_progress):
        self.store: GraphStore = store
        self.summary: RestoreSummary = summary
        self.batch_size = batch_size
        self.max_block_bytes = max_block_bytes
        self.overwrite = overwrite
        self.resume = resume
        self.on_error: OnError = on_error
        self.rejects: RejectsFile | None = rejects
        self.on_progress = on_progress
        self._dropped: set[str] = set()  # with --overwrite a collection is emptied once per run
        self._lock = threading.Lock()  # counters shared by the workers of --threads

    def run(self, chosen: list[tuple[Dump, DumpCollection]], workers: int) -> list[CollectionSummary]:
        if workers <= 1:
            return [self.restore_collection(dump, collection) for dump, collection in chosen]
        # a collection found in several dumps is restored by one worker, in dump order
        by_name: dict[str, list[int]] = {}
        for position, (_dump, collection) in enumerate(chosen):
            by_name.setdefault(collection.name, []).append(position)
        rows: list[CollectionSummary | None] = [None] * len(chosen)

        def restore_all(positions: list[int]) -> None:
            for position in positions:
                rows[position] = self.restore_collection(*chosen[position])

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restore") as pool:
            futures = [pool.submit(restore_all, positions) for positions in by_name.values()]
            errors = []
            for future in futures:
                try:
                    future.result()
                except BaseException as exc:  # the other collections finish; the first failure is raised
                    errors.append(exc)
            if errors:
                raise errors[0]
        return [row for row in rows if row is not None]

    # -- one collection of one dump ------------------------------------------------------
    def restore_collection(self, dump: Dump, collection: DumpCollection) -> CollectionSummary:
        started = time.perf_counter()
        store, name = self.store, collection.name
        row = CollectionSummary(str(dump.directory), name, collection.kind)
        key = progress_key(dump.directory, name)
        progress = None
        if self.resume:
            state = store.get_state(key)
            if state is not None and not store.has_collection(name):
                self.summary.warnings.append(f"{name}: progress found but the collection is gone — restoring it again")
            elif state is not None:
                progress = RestoreProgress.from_state(state)
        else:
            store.delete_state(key)

        if progress is not None and progress.status == "done":
            _load_counts(row, progress)
            row.status = "already restored"
            store.create_collection(name, collection.kind)
        else:
            if progress is None and self.overwrite and name not in self._dropped:
                store.drop_collection(name)
                with self._lock:
                    self._dropped.add(name)
            store.create_collection(name, collection.kind, properties=collection.properties)
            self._note_ignored_properties(collection)
            if not collection.data_files:
                row.status = "empty: no data file"
                self.summary.warnings.append(f"{name}: no data file in {dump.directory} — created empty")
            else:
                self._load(dump, collection, row, key, progress)
            store.put_state(key, _progress(dump, collection, row, "done").to_state())
        row.indexes = [self._create_index(name, definition) for definition in collection.indexes]
        row.seconds = round(time.perf_counter() - started, 3)
        return row

    def _load(self, dump: Dump, collection: DumpCollection, row: CollectionSummary, key: str,
              progress: RestoreProgress | None) -> None:
        files = list(collection.data_files)
        first_file, start_line = 0, 0
        if progress is not None:
            names = [p.name for p in files]
            if progress.file not in names:
                raise DumpFormatError(
                    str(dump.directory),
                    f"the interrupted restore of '{collection.name}' stopped in {progress.file}, which the dump "
                    "no longer has — restore it again without --resume",
                )
            first_file, start_line = names.index(progress.file), progress.line
            _load_counts(row, progress)
            row.resumed_from = {"file": progress.file, "line": start_line}
            row.status = "restored (resumed)"
        stop = self.on_error == "stop"
        for index in range(first_file, len(files)):
            path = files[index]
            skip = start_line if index == first_file else 0
            # reading and parsing run ahead in their own threads while this one writes
            blocks = parsed_blocks(path, collection.kind, start_after=skip, max_lines=self.batch_size,
                                   max_bytes=self.max_block_bytes, first_lines=_FIRST_BLOCK_LINES, stop_at_error=stop)
            for block, parsed in _with_resume_hint(blocks):
                if parsed.rejected:
                    self.rejects.write(parsed.rejected)  # type: ignore[union-attr]
                    row.skipped += len(parsed.rejected)
                row.read += parsed.lines_read
                with self._lock:
                    self.summary.read_this_run += parsed.lines_read
                committed = parsed.stopped_at.line - 1 if parsed.stopped_at else block.last_line
                self._apply(
                    collection.name, parsed, row, key,
                    lambda: _progress(dump, collection, row, "running", path, committed).to_state(),  # noqa: B023 (called at once)
                )
                if self.on_progress:
                    self.on_progress(collection.name, parsed.lines_read)
                if parsed.stopped_at is not None:
                    bad = parsed.stopped_at
                    raise DumpFormatError(
                        str(bad.path),
                        f"{bad.error} — lines before it are restored; fix the line and rerun with --resume, "
                        "or pass --on-error skip",
                        line=bad.line,
                    )

    def _apply(self, name: str, parsed: ParsedBlock, row: CollectionSummary, key: str,
               state: Callable[[], dict]) -> None:
        """Write a block's operations in order; the last write carries the block's progress
        (atomically on the embedded store), so a resume starts after this block. `state`
        builds the progress record once the counts include the block."""
        store, operations = self.store, parsed.operations
        for position, operation in enumerate(operations):
            last = position == len(operations) - 1
            if isinstance(operation, Removals):
                row.removed += store.remove_documents(name, operation.keys)
            elif operation.table is not None:
                if last:
                    row.written += operation.table.num_rows if operation.checked else _distinct_keys(operation)
                    store.upsert_table(name, operation.table, state=(key, state()), checked=operation.checked)
                    return
                row.written += store.upsert_table(name, operation.table, checked=operation.checked)
            else:
                row.written += store.upsert_documents(name, operation.documents or [])
        store.put_state(key, state())

    def _note_ignored_properties(self, collection: DumpCollection) -> None:
        """Say which of the structure file's collection properties this store does not keep."""
        ignored = sorted(
            name for name, value in collection.properties.items()
            if name in RESTORED_PROPERTIES and name not in self.store.collection_properties
            and not _is_default_property(name, value)
        )
        if ignored:
            with self._lock:
                self.summary.warnings.append(
                    f"{collection.name}: collection properties not kept by this store: {', '.join(ignored)}"
                )

    def _create_index(self, name: str, definition: dict) -> dict:
        fields = list(definition.get("fields") or [])
        try:
            outcome = self.store.create_index(name, definition)
        except GraphsvcError as exc:
            return {"type": str(definition.get("type", "")), "fields": fields, "status": "failed", "reason": str(exc)}
        return {"type": outcome.type, "fields": list(outcome.fields), "status": outcome.status,
                "reason": outcome.reason}


def _is_default_property(name: str, value) -> bool:
    """Whether a collection property says no more than a new collection has anyway
    (`lastValue` and other server-assigned parts of keyOptions aside)."""
    if value in (None, [], {}, ""):
        return True
    if name == "keyOptions":
        return isinstance(value, dict) and value.get("type", "traditional") == "traditional" \
            and value.get("allowUserKeys", True) is True
    defaults = {"shardKeys": ["_key"], "numberOfShards": 1, "replicationFactor": 1, "writeConcern": 1,
                "shardingStrategy": "hash"}
    return name in defaults and value == defaults[name]


def _with_resume_hint(blocks: Iterator) -> Iterator:
    """A data file that cannot be read to its end (a truncated or damaged gzip) fails with
    what to do: every line before the damage is committed, so an intact copy of the file
    and --resume finish the restore without reading the committed part again."""
    try:
        yield from blocks
    except DumpFormatError as e:
        if e.line is None:
            raise
        raise DumpFormatError(
            e.path,
            f"{message_of(e)} — lines before it are restored; put back an intact copy of the file and rerun "
            "with --resume",
            line=e.line,
        ) from e
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()


def _distinct_keys(upserts: Upserts) -> int:
    # repeated keys in one block: the last row wins, as the store does
    return pc.count_distinct(upserts.table.column("_key")).as_py()  # type: ignore[union-attr]


def _progress(dump: Dump, collection: DumpCollection, row: CollectionSummary, status: Literal["running", "done"],
              path: Path | None = None, line: int = 0) -> RestoreProgress:
    """The collection's counts so far and, while running, its last committed line."""
    return RestoreProgress(str(Path(dump.directory).resolve()), collection.name, status, row.read, row.written,
                           row.skipped, row.removed, Path(path).name if path is not None else None, line)


def _load_counts(row: CollectionSummary, progress: RestoreProgress) -> None:
    row.read, row.written = progress.read, progress.written
    row.skipped, row.removed = progress.skipped, progress.removed


# ------------------------------------------------------------------------------ dry run


def plan_restore(
    directories: Sequence[Path],
    batch_size: int = DEFAULT_BLOCK_LINES,
    include_system_collections: bool = False,
    *,
    collections: Sequence[str] = (),
    exclude: Sequence[str] = (),
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
    on_progress: Callable[[str, int], None] | None = None,
) -> RestoreSummary:
    """What `restore_dumps` would do, without a store: per collection the lines, the
    documents that would be written, the removals and the invalid lines (reported, not
    raised). Reads every data file once."""
    started = time.perf_counter()
    summary = RestoreSummary(dry_run=True)
    dumps = _open_dumps([Path(d) for d in directories])
    for dump, collection in _selected(dumps, summary, collections, exclude, include_system_collections):
        row = CollectionSummary(str(dump.directory), collection.name, collection.kind, status="dry run")
        begun = time.perf_counter()
        if not collection.data_files:
            row.status = "dry run: no data file, would be created empty"
            summary.warnings.append(f"{collection.name}: no data file in {dump.directory} — would be created empty")
        first_bad: RejectedLine | None = None
        for parsed in _parsed_blocks(collection, batch_size, max_block_bytes):
            row.read += parsed.lines_read
            row.skipped += len(parsed.rejected)
            summary.read_this_run += parsed.lines_read
            first_bad = first_bad or (parsed.rejected[0] if parsed.rejected else None)
            for operation in parsed.operations:
                if isinstance(operation, Removals):
                    row.removed += operation.num_rows
                else:
                    row.written += operation.num_rows
            if on_progress:
                on_progress(collection.name, parsed.lines_read)
        if first_bad is not None:
            summary.warnings.append(
                f"{collection.name}: {row.skipped} invalid line(s), the first {first_bad.path} line {first_bad.line}: "
                f"{first_bad.error}"
            )
        row.indexes = [
            {"type": str(d.get("type", "")), "fields": list(d.get("fields") or []), "status": "planned", "reason": ""}
            for d in collection.indexes
        ]
        row.seconds = round(time.perf_counter() - begun, 3)
        summary.collections.append(row)
    if _restores_graphs(collections, exclude):
        summary.graphs = [g.name for dump in dumps for g in read_graphs(dump)]
    summary.seconds = time.perf_counter() - started
    return summary


def _parsed_blocks(collection: DumpCollection, batch_size: int, max_block_bytes: int) -> Iterator[ParsedBlock]:
    for path in collection.data_files:
        for _block, parsed in parsed_blocks(path, collection.kind, max_lines=batch_size, max_bytes=max_block_bytes,
                                            stop_at_error=False):
            yield parsed
