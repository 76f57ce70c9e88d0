"""The one reader of dump data files: a file (plain or gzip) as blocks of complete raw lines
with their line numbers, resumable after a given line. Everything that reads data lines
(the bulk parser, the per-operation reader) reads them through `iter_line_blocks`."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from graphsvc.errors import DumpFormatError

_GZIP_MAGIC = b"\x1f\x8b"
_READ_CHUNK = 4 << 20  # bytes read (decompressed) per call
DEFAULT_BLOCK_LINES = 50_000
DEFAULT_BLOCK_BYTES = 32 << 20  # a block never holds more raw text than this (unless one line is longer)


@dataclass(frozen=True)
class LineBlock:
    """Consecutive complete lines of one data file, as raw bytes (each ends with a newline)."""

    path: Path
    first_line: int  # 1-based number of the first line in `data`
    data: bytes
    line_ends: np.ndarray  # offset of each line's newline in `data`

    @property
    def num_lines(self) -> int:
        return len(self.line_ends)

    @property
    def last_line(self) -> int:
        return self.first_line + self.num_lines - 1

    def line_starts(self) -> np.ndarray:
        starts = np.empty_like(self.line_ends)
        if len(starts):
            starts[0] = 0
            starts[1:] = self.line_ends[:-1] + 1
        return starts

    def raw_line(self, index: int) -> bytes:
        start = 0 if index == 0 else int(self.line_ends[index - 1]) + 1
        return self.data[start : int(self.line_ends[index])]

    def nonblank_lines(self) -> Iterator[tuple[int, bytes]]:
        """(1-based line number, raw line) for each line that is not blank or whitespace:
        blank lines hold no operation but count in the line numbers."""
        for index in range(self.num_lines):
            raw = self.raw_line(index)
            if raw.strip():
                yield self.first_line + index, raw

    def slice(self, lo: int, hi: int) -> "LineBlock":
        """Lines lo..hi-1 (0-based within this block) as a block of their own."""
        start = 0 if lo == 0 else int(self.line_ends[lo - 1]) + 1
        end = int(self.line_ends[hi - 1]) + 1
        return LineBlock(self.path, self.first_line + lo, self.data[start:end], self.line_ends[lo:hi] - start)


def iter_line_blocks(
    path: str | os.PathLike,
    start_after: int = 0,
    max_lines: int = DEFAULT_BLOCK_LINES,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
    first_lines: int | None = None,
) -> Iterator[LineBlock]:
    """Stream a data file (plain or gzip) as blocks of at most `max_lines` lines and about
    `max_bytes` bytes, skipping the first `start_after` lines (to resume). With
    `first_lines`, the first block holds that many lines and each next one twice as many,
    up to `max_lines`: a pipeline that parses one block while writing another gets going
    sooner.

    A corrupt or truncated gzip stream first yields every complete line before the damage,
    then raises DumpFormatError naming the first line that could not be read.
    """
    if max_lines < 1:
        raise ValueError(f"max_lines must be at least 1, got {max_lines}")
    limit = max_lines if first_lines is None else max(1, min(first_lines, max_lines))
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as e:
        raise DumpFormatError(str(path), f"cannot be read: {e}") from e

    consumed = 0  # complete lines handed out or skipped so far
    chunks: list[bytes] = []
    pending_lines = pending_bytes = 0
    failure: str | None = None  # what went wrong reading past the lines handed out
    with f:
        reader = _decompressed_chunks(f, path)
        eof = False
        while not eof:
            try:
                chunk = next(reader, b"")
            except (OSError, EOFError, zlib.error) as e:
                failure = f"corrupt gzip stream: {e}"
                chunk = b""
            if chunk:
                chunks.append(chunk)
                pending_lines += chunk.count(b"\n")
                pending_bytes += len(chunk)
                if pending_lines < limit and pending_bytes < max_bytes:
                    continue
            else:
                eof = True
            buf = b"".join(chunks)
            if eof and failure is None and buf and not buf.endswith(b"\n"):
                buf += b"\n"  # the last line of a file needs no newline
            ends = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 0x0A)
            done = 0  # lines of `ends` handed out
            while done < len(ends):
                if consumed < start_after:
                    skip = min(start_after - consumed, len(ends) - done)
                    done += skip
                    consumed += skip
                    continue
                start = 0 if done == 0 else int(ends[done - 1]) + 1
                available = len(ends) - done
                fit = int(np.searchsorted(ends[done:], start + max_bytes, side="left"))
                take = min(limit, available, max(fit, 1))
                if not eof and take == available and take < limit and fit >= available:
                    break  # a short block: wait for more data unless the file ended
                end = int(ends[done + take - 1]) + 1
                yield LineBlock(path, consumed + 1, buf[start:end], ends[done : done + take] - start)
                done += take
                consumed += take
                limit = min(limit * 2, max_lines)
            tail_start = 0 if done == 0 else int(ends[done - 1]) + 1
            tail = buf[tail_start:]
            chunks = [tail] if tail else []
            pending_lines = len(ends) - done
            pending_bytes = len(tail)
            del buf
    if failure is not None:
        raise DumpFormatError(str(path), failure, line=consumed + 1)


def _decompressed_chunks(raw: IO[bytes], path: Path) -> Iterator[bytes]:
    """The file's bytes, gunzipped when it is gzip, in chunks of at most `_READ_CHUNK`. The
    magic is sniffed as well as the suffix: a compressed file renamed to `.data.json` still
    reads, and a `.gz` that is not gzip fails as a corrupt gzip stream. zlib is driven
    directly (not `gzip.GzipFile`) so that everything before a damaged or truncated spot
    comes out before the error."""
    magic = raw.read(2)
    raw.seek(0)
    if magic != _GZIP_MAGIC and not path.name.endswith(".gz"):
        while chunk := raw.read(_READ_CHUNK):
            yield chunk
        return
    inflater = zlib.decompressobj(wbits=31)
    started = False
    while True:
        data = raw.read(1 << 20)
        if not data:
            if not started:
                return  # an empty file
            if not inflater.eof:
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
            return
        while data:
            started = True
            out = inflater.decompress(data, _READ_CHUNK)
            if out:
                yield out
            if inflater.eof:
                data = inflater.unused_data.lstrip(b"\x00")  # members may follow; zero padding may not count
                inflater = zlib.decompressobj(wbits=31)
                started = bool(data)
                if not data:
                    break
            else:
                data = inflater.unconsumed_tail

