"""Facts about the host that device discovery reports: CPU name, memory, usable cores, installed versions,
and the machine fingerprint that speed measurements are keyed on.

Standard library only (no Paddle, no runtime import), so any plugin's
discovery hook may call these.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``'s ``flags``, or ``Features`` on aarch64); empty if unknown."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


#: x86 flags of an int8 dot-product instruction (u8 x s8 summed in int32 with no int16 step).
INT8_DOT_PRODUCT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


def int8_saturates() -> bool:
    """True on an x86 CPU without VNNI/AMX: its u8 x s8 kernels (``vpmaddubsw``) add pairs in int16, which
    saturates when full 8-bit weights meet large activations. An int8 quantizer must then keep weights in
    7 bits or lose accuracy."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    flags = cpu_flags()  # unknown flags count as saturating: 7-bit weights cost little, saturation costs a lot
    return not any(flag in flags for flag in INT8_DOT_PRODUCT_FLAGS)


def memory_bytes() -> int | None:
    """Physical memory of the host in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def default_threads() -> int:
    """Cores this process may run on (its CPU affinity), the default thread count of CPU backends."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def dist_version(*dists: str) -> str:
    """Version of the first of ``dists`` that is installed (``"paddlepaddle", "paddlepaddle-gpu"``), else ""."""
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return ""


def paddle_version() -> str:
    """Installed Paddle version (CPU or GPU build), "" when Paddle is absent. Does not import Paddle."""
    return dist_version("paddlepaddle", "paddlepaddle-gpu")


def machine_fingerprint() -> dict[str, Any]:
    """What identifies this host for measurements and caches keyed on speed: a JSON-able dict.

    ``cpu`` (model name), ``cores`` (usable by this process), ``memory_bytes``, ``machine``
    (``x86_64``, ``aarch64``), ``node`` (host name), ``system`` + ``release`` (OS kernel) and
    ``python``. Installed runtime versions are not in it: a cache key adds the versions
    of what it measured. Standard library only; cheap enough to call per decision.
    """
    return {"cpu": cpu_name(), "cores": default_threads(), "memory_bytes": memory_bytes(),
            "machine": platform.machine(), "node": platform.node(), "system": platform.system(),
            "release": platform.release(), "python": platform.python_version()}
