"""A simulated Paddle CustomDevice: real C++ that Paddle loads like a vendor's plugin, built on demand.

    from hwdeploy_customdevice import simulated

    root = simulated.build("gcu", visible_env="TOPS_VISIBLE_DEVICES")  # holds libpaddle-custom-simgcu.so
    env = {"CUSTOM_DEVICE_ROOT": str(root)}   # must be set before `import paddle`

It stands in for a vendor's device on machines without one, the way PyTorch's
OpenReg backend carries its own simulated runtime: the sources (runtime.cc,
kernels.cc, simdevice.h, CMakeLists.txt) ship inside this package and are
compiled against the installed paddlepaddle wheel's own headers (cmake + a C++
compiler). The device type and the vendor's visible-devices variable are fixed
at build time, so any vendor's plugin can be tested on "its" device. See
README.md next to this file for what the device does and its environment.

Builds go to ``$HWDEPLOY_CACHE_DIR/simdevice/<type>-<key>``, keyed by the
sources, the type, the variable and the Paddle version: built once per CI run
(about 4 s per type on 2 cores), published atomically so concurrent test
processes never see a half-built library.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from hwdeploy.sdk import hostinfo

SOURCE_DIR = Path(__file__).resolve().parent
SOURCES = ("CMakeLists.txt", "runtime.cc", "kernels.cc", "simdevice.h")
#: The kernels kernels.cc registers (float32 only); everything else falls back to the CPU.
KERNELS = frozenset({"relu", "add", "matmul", "conv2d"})
#: Environment variables of the simulated device (see runtime.cc, kernels.cc).
TRACE_ENV = "SIMDEV_TRACE"
COUNT_ENV = "SIMDEV_DEVICE_COUNT"
MEMORY_ENV = "SIMDEV_MEMORY_MB"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class BuildError(RuntimeError):
    """cmake or the compiler failed; the message has the tail of their output."""


class ToolsMissing(BuildError):
    """No cmake, no C++ compiler or no Paddle headers here: the message says which (tests skip with it)."""


def default_visible_env(device_type: str) -> str:
    """The visible-devices variable a build honours when none is given: ``<TYPE>_VISIBLE_DEVICES``."""
    return f"{device_type.upper()}_VISIBLE_DEVICES"


def paddle_dir() -> Path | None:
    """The installed ``paddle`` package directory, found without importing Paddle."""
    spec = importlib.util.find_spec("paddle")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def missing_tools() -> str | None:
    """Why the simulated device cannot be built here (None when it can): tests skip with this reason."""
    missing = [tool for tool, found in (("cmake", shutil.which("cmake")), ("a C++ compiler (g++)", _compiler()))
               if not found]
    if missing:
        return f"cannot build the simulated CustomDevice: {' and '.join(missing)} not found (apt-get install cmake g++)"
    pdir = paddle_dir()
    if pdir is None or not (pdir / "include" / "paddle" / "phi" / "capi" / "all.h").exists():
        return "cannot build the simulated CustomDevice: the installed paddlepaddle wheel has no C kernel API headers"
    return None


def _paddle_version() -> str:
    return hostinfo.paddle_version() or "none"


def build_key(device_type: str, visible_env: str) -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (SOURCE_DIR / name).read_bytes() + b"\0")
    digest.update(f"{device_type}\0{visible_env}\0{_paddle_version()}\0{paddle_dir()}".encode())
    return digest.hexdigest()[:20]


def library_name(device_type: str) -> str:
    return f"libpaddle-custom-sim{device_type}.so"


def build(device_type: str = "npu", *, visible_env: str | None = None, jobs: int = 2) -> Path:
    """The directory holding the simulated ``device_type`` plugin (set ``CUSTOM_DEVICE_ROOT`` to it).

    ``visible_env`` is the vendor's visible-devices variable the simulated
    runtime honours like the real one (default :func:`default_visible_env`).
    Builds on the first call for these sources / type / variable / Paddle
    version; later calls (any process) return the cached copy at once, even
    where the tools are gone. Raises :class:`ToolsMissing` when it cannot build
    here and :class:`BuildError` with the compiler's output when the build fails.
    """
    if not device_type.isidentifier() or device_type.lower() != device_type:
        raise ValueError(f"device type must be a lower-case identifier like 'npu', got {device_type!r}")
    visible_env = visible_env or default_visible_env(device_type)
    if not _ENV_NAME.fullmatch(visible_env):
        raise ValueError(f"visible_env must be an environment variable name, got {visible_env!r}")
    from hwdeploy.sdk.cache import build_once, cache_dir

    final = cache_dir("simdevice") / f"{device_type}-{build_key(device_type, visible_env)}"
    if (final / library_name(device_type)).is_file():
        return final
    problem = missing_tools()
    if problem:
        raise ToolsMissing(problem)

    def run(tmp: Path) -> None:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="simdevice-build-") as work:
            generator = ["-G", "Ninja"] if shutil.which("ninja") else []
            configure = ["cmake", "-S", str(SOURCE_DIR), "-B", work, *generator, f"-DSIMDEV_TYPE={device_type}",
                         f"-DSIMDEV_VISIBLE_ENV={visible_env}", f"-DPADDLE_DIR={paddle_dir()}",
                         f"-DCMAKE_CXX_COMPILER={_compiler()}", "-DCMAKE_BUILD_TYPE=Release"]
            for cmd in (configure, ["cmake", "--build", work, "-j", str(jobs)]):
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if done.returncode != 0:
                    tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
                    raise BuildError(f"{' '.join(cmd[:2])} failed (exit {done.returncode}):\n{tail}")
            shutil.copy2(Path(work) / library_name(device_type), tmp / library_name(device_type))
        (tmp / "build.txt").write_text(f"type={device_type}\nvisible_env={visible_env}\npaddle={_paddle_version()}\n"
                                       f"seconds={time.monotonic() - started:.1f}\n")

    build_once(final, run)
    return final


__all__ = ["COUNT_ENV", "KERNELS", "MEMORY_ENV", "SOURCES", "SOURCE_DIR", "TRACE_ENV", "BuildError", "ToolsMissing",
           "build", "build_key", "default_visible_env", "library_name", "missing_tools", "paddle_dir"]
