"""System shared memory for large request tensors, when Triton runs on this machine.

Sending a 16,384 × 512 float32 batch over gRPC serialises it into protobuf, copies it
through the channel and parses it again on the server, and the answer takes the same
road back: for the per-layer GraphSAGE models that costs about four times the model
itself. With system shared memory the client writes the tensors into a region under
/dev/shm that the server has registered, the request only names the region, and the
outputs are written back into a second region (measured: 100,000 rows through one
256-d layer in 0.45–0.55 s instead of 1.7–2.4 s, one request at a time).

One `SharedMemoryChannel` per connection (so per thread): an input region and an output
region, grown when a request needs more, registered with the server the connection talks
to and registered again after the connection was replaced (a restarted server forgets its
registrations). Region names carry the process id and its pid namespace; regions a dead
process of the same namespace left behind are removed the next time a channel is made (a
process in another container sharing /dev/shm is never judged by a pid we cannot see).

The client sends a request this way when `shared_memory_wanted` (GRAPHSVC_TRITON_SHM: by
default, gRPC to a loopback address) and `worth_shared_memory` (numeric inputs of at least
SHM_MIN_BYTES); `NoSharedMemory` tells it to fall back to tensors in the request.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from graphsvc.settings import TRITON_SHM, read
from graphsvc.triton.retry import describe, is_connection_error

LOG = logging.getLogger(__name__)

PREFIX = "graphsvc-shm"
MIN_REGION = 1 << 20
SHM_DIR = Path("/dev/shm")
_NAME = re.compile(rf"^{PREFIX}-(\d+)-(\d+)-")
_counter = iter(range(1 << 62))
_counter_lock = threading.Lock()
# requests whose inputs reach this many bytes go through shared memory (when it is on)
SHM_MIN_BYTES = 256 * 1024
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

OutputSpecs = list[tuple[str, str, list[int]]]  # (name, datatype, shape) of each output


def shared_memory_wanted(protocol: str, address: str, environ: Mapping[str, str] | None = None) -> bool:
    """GRAPHSVC_TRITON_SHM: auto (default: gRPC to a loopback address), on (gRPC to any
    address: the server must share this machine's /dev/shm), off."""
    mode = read(TRITON_SHM, environ)
    if mode == "off" or protocol != "grpc":
        return False
    return mode == "on" or address.rsplit(":", 1)[0] in _LOOPBACK


def worth_shared_memory(arrays: Mapping[str, np.ndarray]) -> bool:
    """Numeric inputs large enough for shared memory to pay off."""
    return sum(a.nbytes for a in arrays.values()) >= SHM_MIN_BYTES \
        and all(a.dtype.kind in "biuf" for a in arrays.values())


def _namespace() -> str:
    """The inode of this process's pid namespace: pids mean something only within it."""
    try:
        return re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")) or "0"
    except OSError:
        return "0"


def region_stem() -> str:
    """What the names of this process's regions start with."""
    return f"{PREFIX}-{_namespace()}-{os.getpid()}-"


class RegionUnavailable(Exception):
    """A region could not be made on this machine (no room in /dev/shm, no /dev/shm)."""


class NoSharedMemory(Exception):
    """Shared memory cannot be used: no room in /dev/shm, or the server would not take our
    regions (e.g. it cannot see this machine's /dev/shm)."""


def remove_stale_regions(directory: Path = SHM_DIR) -> int:
    """Unlink regions of ours (same pid namespace) whose process is gone; returns how many."""
    removed = 0
    namespace = _namespace()
    try:
        entries = list(directory.iterdir())
    except OSError:
        return 0
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or match.group(1) != namespace or _alive(int(match.group(2))):
            continue
        try:
            entry.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_bytes(directory: Path) -> int | None:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def _size_for(nbytes: int) -> int:
    size = MIN_REGION
    while size < nbytes:
        size <<= 1
    return size


class _Region:
    def __init__(self, role: str, nbytes: int):
        import tritonclient.utils.shared_memory as shm

        with _counter_lock:
            number = next(_counter)
        self.name = f"{region_stem()}{number}-{role}"
        self.key = f"/{self.name}"
        self.size = _size_for(nbytes)
        # /dev/shm is a tmpfs that can be small (64 MB in a default container): a region
        # larger than its free space is created fine and then kills the process (SIGBUS)
        # on the first write past the end, so check first
        free = _free_bytes(SHM_DIR)
        if free is not None and free < self.size + MIN_REGION:
            raise RegionUnavailable(f"{SHM_DIR} has {free >> 20} MB free, a {self.size >> 20} MB region does not fit")
        try:
            self.handle = shm.create_shared_memory_region(self.name, self.key, self.size)
        except Exception as exc:  # noqa: BLE001 — tritonclient's SharedMemoryException and OS errors
            raise RegionUnavailable(f"cannot create {self.key}: {exc}") from None

    def destroy(self) -> None:
        import tritonclient.utils.shared_memory as shm

        try:
            shm.destroy_shared_memory_region(self.handle)
        except Exception:  # noqa: BLE001 — best effort: the name is ours, nobody else uses it
            pass


class SharedMemoryChannel:
    """The shared-memory regions of one connection (see the module doc)."""

    def __init__(self):
        self._regions: dict[str, _Region] = {}
        self._registered: dict[str, int] = {}  # region role -> id() of the client it is registered with

    def region(self, client, role: str, nbytes: int) -> _Region:
        """A region of at least `nbytes` for `role` ("input"/"output"), registered with `client`."""
        region = self._regions.get(role)
        if region is None or region.size < nbytes:
            if region is not None:
                self._unregister(client, role)
                region.destroy()
            region = self._regions[role] = _Region(role, nbytes)
        if self._registered.get(role) != id(client):
            try:
                client.unregister_system_shared_memory(region.name)  # a stale registration of the same name
            except Exception:  # noqa: BLE001
                pass
            client.register_system_shared_memory(region.name, region.key, region.size)
            self._registered[role] = id(client)
        return region

    def forget_registrations(self) -> None:
        """The server lost them (it restarted behind the same connection): register again on next use."""
        self._registered.clear()

    def write(self, region: _Region, arrays: list[np.ndarray]) -> list[int]:
        """Copy `arrays` one after another into `region`; their offsets."""
        import tritonclient.utils.shared_memory as shm

        offsets, offset = [], 0
        for array in arrays:
            offsets.append(offset)
            offset += array.nbytes
        shm.set_shared_memory_region(region.handle, arrays)
        return offsets

    @staticmethod
    def read(region: _Region, dtype: np.dtype, shape: list[int], offset: int) -> np.ndarray:
        import tritonclient.utils.shared_memory as shm

        return shm.get_contents_as_numpy(region.handle, dtype, shape, offset=offset).copy()

    def _unregister(self, client, role: str) -> None:
        region = self._regions.get(role)
        if region is not None and self._registered.pop(role, None) == id(client):
            try:
                client.unregister_system_shared_memory(region.name)
            except Exception:  # noqa: BLE001 — the server may be gone
                pass

    def close(self, client=None) -> None:
        """Unregister (when `client` is the one they were registered with) and free every region."""
        for role, region in list(self._regions.items()):
            if client is not None:
                self._unregister(client, role)
            region.destroy()
        self._regions.clear()
        self._registered.clear()


def _region(channel: SharedMemoryChannel, client, role: str, nbytes: int) -> _Region:
    try:
        return channel.region(client, role, nbytes)
    except RegionUnavailable as exc:  # this machine's side: no point in retrying
        raise NoSharedMemory(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 — a connection error is retried by the caller
        if is_connection_error(exc):
            raise
        raise NoSharedMemory(describe(exc)) from None


def infer_shared(client, channel: SharedMemoryChannel, model: str, arrays: dict[str, np.ndarray],
                 outputs: Sequence[str] | None, version: str, *, timeout: float,
                 output_specs: Callable[[], OutputSpecs | None]) -> dict[str, np.ndarray]:
    """One request through the gRPC `client` with its inputs (and, for a batching model, its
    outputs) in `channel`'s regions. `output_specs()`: the model's outputs when it batches,
    else None (a leading -1 there is not the request's batch size). Raises NoSharedMemory
    when shared memory cannot be used."""
    try:
        return _infer_shared_once(client, channel, model, arrays, outputs, version, timeout, output_specs)
    except InferenceServerException as exc:
        if "shared memory region" not in str(exc):
            raise
        # a server restarted behind the same connection has forgotten our regions
        channel.forget_registrations()
        return _infer_shared_once(client, channel, model, arrays, outputs, version, timeout, output_specs)


def _infer_shared_once(client, channel: SharedMemoryChannel, model: str, arrays: dict[str, np.ndarray],
                       outputs: Sequence[str] | None, version: str, timeout: float,
                       output_specs: Callable[[], OutputSpecs | None]) -> dict[str, np.ndarray]:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import triton_to_np_dtype

    region = _region(channel, client, "input", sum(a.nbytes for a in arrays.values()))
    infer_inputs = []
    for (name, array), offset in zip(arrays.items(), channel.write(region, list(arrays.values()))):
        item = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        item.set_shared_memory(region.name, array.nbytes, offset=offset)
        infer_inputs.append(item)
    specs = output_specs()
    batch = next((a.shape[0] for a in arrays.values() if a.ndim), None)
    placed: dict[str, tuple[int, int]] = {}  # output name -> (offset, bytes)
    requested = []
    if specs is not None and batch is not None:
        wanted = [spec for spec in specs if outputs is None or spec[0] in outputs]
        end = 0
        for name, datatype, shape in wanted:
            dims = [batch] + shape[1:]
            dtype = triton_to_np_dtype(datatype)
            if datatype == "BYTES" or dtype is None or any(d < 0 for d in dims):
                continue
            placed[name] = (end, int(np.prod(dims)) * np.dtype(dtype).itemsize)
            end += placed[name][1]
        out_region = _region(channel, client, "output", end) if placed else None
        for name, _, _ in wanted:
            item = grpcclient.InferRequestedOutput(name)
            if name in placed:
                item.set_shared_memory(out_region.name, placed[name][1], offset=placed[name][0])
            requested.append(item)
    else:
        requested = [grpcclient.InferRequestedOutput(n) for n in outputs] if outputs is not None else None
    result = client.infer(model, infer_inputs, model_version=version, outputs=requested, client_timeout=timeout)
    names = list(outputs) if outputs is not None else [o.name for o in result.get_response().outputs]
    decoded = {}
    for name in names:
        if name in placed:
            tensor = result.get_output(name)
            decoded[name] = channel.read(out_region, triton_to_np_dtype(tensor.datatype), list(tensor.shape),
                                         placed[name][0])
        else:
            decoded[name] = result.as_numpy(name)
    return decoded
