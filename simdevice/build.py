"""Build the simulated CustomDevice once per (sources, device type, Paddle version), cached.

    from build import build, missing_tools
    root = build("npu")      # a directory holding libpaddle-custom-simnpu.so
    env = {"CUSTOM_DEVICE_ROOT": str(root)}   # must be set before `import paddle`

Tests load this file by path (it is not a package). The build goes to
``$HWDEPLOY_CACHE_DIR/simdevice/<type>-<key>``: built once per CI run (about
5 s with cmake + g++ on 2 cores), published atomically so concurrent test
processes never see a half-built library.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hwdeploy.sdk import hostinfo

HERE = Path(__file__).resolve().parent
SOURCES = ("CMakeLists.txt", "runtime.cc", "kernels.cc", "simdevice.h")
#: The kernels kernels.cc registers (float32 only); everything else falls back to the CPU.
KERNELS = frozenset({"relu", "add", "matmul", "conv2d"})
#: The vendor visible-devices variable the simulated runtime honours, per device type.
VISIBLE_ENV = {"npu": "ASCEND_RT_VISIBLE_DEVICES", "mlu": "MLU_VISIBLE_DEVICES"}
#: Environment variables of the simulated device (see runtime.cc, kernels.cc).
TRACE_ENV = "SIMDEV_TRACE"
COUNT_ENV = "SIMDEV_DEVICE_COUNT"


class BuildError(RuntimeError):
    """cmake or the compiler failed; the message has the tail of their output."""


class ToolsMissing(BuildError):
    """No cmake, no C++ compiler or no Paddle headers here: the message says which (tests skip with it)."""


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


def build_key(device_type: str) -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (HERE / name).read_bytes() + b"\0")
    digest.update(f"{device_type}\0{_paddle_version()}\0{paddle_dir()}".encode())
    return digest.hexdigest()[:20]


def library_name(device_type: str) -> str:
    return f"libpaddle-custom-sim{device_type}.so"


def build(device_type: str = "npu", *, jobs: int = 2) -> Path:
    """The directory holding the simulated ``device_type`` plugin (set ``CUSTOM_DEVICE_ROOT`` to it).

    Builds on the first call for these sources / type / Paddle version; later
    calls (any process) return the cached copy at once, even where the tools
    are gone. Raises :class:`ToolsMissing` when it cannot build here and
    :class:`BuildError` with the compiler's output when the build fails.
    """
    if not device_type.isidentifier() or device_type.lower() != device_type:
        raise ValueError(f"device type must be a lower-case identifier like 'npu', got {device_type!r}")
    from hwdeploy.sdk.cache import build_once, cache_dir

    final = cache_dir("simdevice") / f"{device_type}-{build_key(device_type)}"
    if (final / library_name(device_type)).is_file():
        return final
    problem = missing_tools()
    if problem:
        raise ToolsMissing(problem)

    def run(tmp: Path) -> None:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="simdevice-build-") as work:
            generator = ["-G", "Ninja"] if shutil.which("ninja") else []
            configure = ["cmake", "-S", str(HERE), "-B", work, *generator, f"-DSIMDEV_TYPE={device_type}",
                         f"-DPADDLE_DIR={paddle_dir()}", f"-DCMAKE_CXX_COMPILER={_compiler()}",
                         "-DCMAKE_BUILD_TYPE=Release"]
            for cmd in (configure, ["cmake", "--build", work, "-j", str(jobs)]):
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if done.returncode != 0:
                    tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
                    raise BuildError(f"{' '.join(cmd[:2])} failed (exit {done.returncode}):\n{tail}")
            shutil.copy2(Path(work) / library_name(device_type), tmp / library_name(device_type))
        (tmp / "build.txt").write_text(f"type={device_type}\npaddle={_paddle_version()}\n"
                                       f"seconds={time.monotonic() - started:.1f}\n")

    build_once(final, run)
    return final


if __name__ == "__main__":
    for kind in sys.argv[1:] or ["npu"]:
        t0 = time.monotonic()
        print(kind, build(kind), f"{time.monotonic() - t0:.1f}s")
