"""Find a `tritonserver` with a Python backend for this interpreter, and set up what it needs.

The search order is $GRAPHSVC_TRITONSERVER, the server bundled in the nvidia-pytriton
package, `tritonserver` on PATH, /opt/tritonserver/bin/tritonserver; the first one whose
installation has a Python backend and a stub for this Python version wins.

What the server process needs from this interpreter (`server_environment`):
  * LD_LIBRARY_PATH starts with the running interpreter's LIBDIR (the stub must load
    *this* libpython3.x, not the system one) and nvidia_pytriton.libs;
  * PATH starts with the directory of `sys.executable`, as pytriton does: the embedded
    interpreter in the stub finds `python3` there, sees the venv's `pyvenv.cfg`, and so
    gets the venv's site-packages (torch, numpy) with .pth files processed. (The stub
    runs its interpreter with ignore_environment=1: PYTHONPATH/PYTHONHOME do nothing.)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from graphsvc.errors import ConfigError
from graphsvc.files import atomic_path
from graphsvc.settings import TRITONSERVER, read

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class TritonDistribution:
    """Where a tritonserver installation keeps its pieces."""

    binary: Path
    python_backend: Path  # directory with libtriton_python.so
    stub: Path  # triton_python_backend_stub matching this interpreter
    libs: Path | None  # extra shared libraries (nvidia_pytriton.libs)
    caches: Path | None


def _pytriton_root() -> Path | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def find_tritonserver() -> Path:
    """Path of the `tritonserver` binary (see the module docstring for the search order)."""
    return triton_distribution().binary


def triton_distribution() -> TritonDistribution:
    """The first tritonserver installation with a Python backend for this interpreter.

    Raises ConfigError when $GRAPHSVC_TRITONSERVER is not an executable or none is found.
    """
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates: list[Path] = []
    path = read(TRITONSERVER)
    if path is not None:
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"{TRITONSERVER}={path} is not an executable file")
        candidates.append(path)
    root = _pytriton_root()
    if root is not None:
        candidates.append(root / "tritonserver" / "bin" / "tritonserver")
    which = shutil.which("tritonserver")
    if which:
        candidates.append(Path(which))
    candidates.append(Path("/opt/tritonserver/bin/tritonserver"))

    for binary in candidates:
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            continue
        home = binary.resolve().parent.parent
        python_backend = home / "backends" / "python"
        if not (python_backend / "libtriton_python.so").is_file():
            continue
        stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"  # pytriton layout
        if not stub.is_file():
            stub = python_backend / "triton_python_backend_stub"  # NGC layout
        if not stub.is_file():
            continue
        libs = home.parent.parent / "nvidia_pytriton.libs"  # site-packages/nvidia_pytriton.libs
        if not libs.is_dir():
            libs = home / "external_libs"
        caches = home / "caches"
        return TritonDistribution(
            binary=binary,
            python_backend=python_backend,
            stub=stub,
            libs=libs if libs.is_dir() else None,
            caches=caches if caches.is_dir() else None,
        )
    raise ConfigError(
        f"no tritonserver with a Python backend for Python {version} found "
        "(install nvidia-pytriton, or set GRAPHSVC_TRITONSERVER to the tritonserver binary)"
    )


def prepare_backends(dist: TritonDistribution, backends_dir: Path) -> Path:
    """backends/python/ with the stub matching this interpreter (as pytriton does)."""
    target = backends_dir / "python"
    target.mkdir(parents=True, exist_ok=True)
    for source in dist.python_backend.iterdir():
        if source.is_file() and source.name != "triton_python_backend_stub":
            _copy_if_changed(source, target / source.name)
    _copy_if_changed(dist.stub, target / "triton_python_backend_stub")
    return backends_dir


def _copy_if_changed(source: Path, dest: Path) -> None:
    try:
        st, dt = source.stat(), dest.stat()
        if st.st_size == dt.st_size and st.st_mtime_ns == dt.st_mtime_ns:
            return
    except FileNotFoundError:
        pass
    with atomic_path(dest) as tmp:
        shutil.copy2(source, tmp)


def server_environment(dist: TritonDistribution) -> dict[str, str]:
    """This process's environment, with the library and program paths the stub needs (module docstring)."""
    env = dict(os.environ)
    libdirs = [sysconfig.get_config_var("LIBDIR") or ""]
    if dist.libs is not None:
        libdirs.append(str(dist.libs))
    if env.get("LD_LIBRARY_PATH"):
        libdirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libdirs if p)
    bindir = Path(sys.executable).parent
    if not (bindir / "python3").exists():
        LOG.warning("%s has no python3: the Python-backend stub may not find this environment's packages", bindir)
    env["PATH"] = os.pathsep.join([str(bindir), env.get("PATH", "")])
    env.pop("PYTHONHOME", None)
    return env
