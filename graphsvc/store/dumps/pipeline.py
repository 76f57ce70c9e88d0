"""A data file as parsed blocks, produced ahead of the consumer: reading (gunzip, split into
lines) and parsing each run in their own thread while the caller writes the previous block.
All three stages spend most of their time outside the GIL (zlib, pyarrow, the store)."""

from __future__ import annotations

import os
import queue
import threading
from typing import Iterator, Literal

from graphsvc.store.dumps.blocks import DEFAULT_BLOCK_BYTES, DEFAULT_BLOCK_LINES, LineBlock, iter_line_blocks
from graphsvc.store.dumps.parse import ParsedBlock, parse_block


def parsed_blocks(
    path: str | os.PathLike,
    kind: Literal["document", "edge"],
    *,
    start_after: int = 0,
    max_lines: int = DEFAULT_BLOCK_LINES,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
    first_lines: int | None = None,
    stop_at_error: bool = True,
) -> Iterator[tuple[LineBlock, ParsedBlock]]:
    """`iter_line_blocks` (same arguments) with each block's `parse_block`, read and parsed
    ahead. Errors arrive in file order; closing the iterator stops both threads and closes
    the file."""
    # the generator expression holds the only reference: closing it stops the first stage too
    blocks = (
        (block, parse_block(block, kind, stop_at_error=stop_at_error))
        for block in _read_ahead(iter_line_blocks(path, start_after, max_lines, max_bytes, first_lines))
    )
    return _read_ahead(blocks)


def _read_ahead(items: Iterator, depth: int = 1) -> Iterator:
    """Produce the next item(s) of `items` in a thread while the caller works on the
    current one. Errors arrive in order; a consumer that stops early stops the producer too.
    (Hand-written: `concurrent.futures` has no bounded, closable lookahead over a generator.)"""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stopped = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in _closing(items):
                while not stopped.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stopped.is_set():
                    return
            slots.put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put((done, exc))

    producer = threading.Thread(target=produce, name="restore-read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            item, error = slots.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stopped.set()
        while producer.is_alive():
            try:
                slots.get_nowait()  # unblock a producer waiting to put
            except queue.Empty:
                pass
            producer.join(timeout=0.05)


def _closing(items: Iterator) -> Iterator:
    try:
        yield from items
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # an abandoned generator closes its data file now, not at garbage collection
