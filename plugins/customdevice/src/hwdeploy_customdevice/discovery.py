"""Which CustomDevice types Paddle registers here, asked without importing Paddle in the caller.

Paddle loads CustomDevice plugin libraries once, when it is first imported, from
``$CUSTOM_DEVICE_ROOT`` (else ``site-packages/paddle_custom_device/``). Discovery
therefore imports Paddle in a child process (a broken plugin library cannot take
the caller down, and the caller never pays for importing Paddle) and caches the
answer, keyed by the plugin libraries on disk and the visible-devices variables.
:func:`ensure_registered` is the other half: the check, in the creating process,
that keeps ``enable_custom_device`` from aborting it.
"""

from __future__ import annotations

import contextlib
import os
import site
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwdeploy.errors import DeviceNotFoundError
from hwdeploy.sdk import paddle_inference as pi
from hwdeploy.sdk.isolation import run_probe

#: How long a discovery result stays valid on disk (it is also keyed by the plugin files and env).
DISCOVERY_TTL = 300.0


def plugin_search_dirs() -> list[Path]:
    """The directories Paddle loads CustomDevice plugin libraries from, as it will on import.

    ``$CUSTOM_DEVICE_ROOT`` when set (and only it), else every
    ``site-packages/paddle_custom_device`` (where vendor wheels install).
    """
    root = os.environ.get("CUSTOM_DEVICE_ROOT")
    if root:
        return [Path(root)]
    sites = [sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib")]
    with contextlib.suppress(AttributeError):
        sites += site.getsitepackages()
    dirs: list[Path] = []
    for entry in sites:
        if entry and (Path(entry) / "paddle_custom_device") not in dirs:
            dirs.append(Path(entry) / "paddle_custom_device")
    return dirs


def plugin_libraries() -> list[Path]:
    """The ``.so`` files Paddle would try to load as CustomDevice plugins."""
    libs = []
    for directory in plugin_search_dirs():
        with contextlib.suppress(OSError):
            libs += sorted(p for p in directory.iterdir() if p.suffix == ".so" and p.is_file())
    return libs


def _fingerprint() -> list[Any]:
    # What decides Paddle's answer: which libraries, which versions of them, which devices are visible.
    libs = []
    for lib in plugin_libraries():
        with contextlib.suppress(OSError):
            stat = lib.stat()
            libs.append([str(lib), stat.st_size, stat.st_mtime_ns])
    visible = {k: v for k, v in sorted(os.environ.items()) if k.endswith("VISIBLE_DEVICES")}
    return [libs, visible]


@dataclass
class CustomDeviceProbe:
    """What Paddle reports about CustomDevice plugins in a fresh process."""

    ok: bool
    types: dict[str, int] = field(default_factory=dict)  # device type -> visible device count
    error: str = ""
    libraries: list[str] = field(default_factory=list)
    search_dirs: list[str] = field(default_factory=list)


def registered_custom_devices(*, refresh: bool = False, timeout: float = 60.0) -> CustomDeviceProbe:
    """The custom device types Paddle registers here and how many devices each has.

    Runs ``import paddle`` in a child process (honouring ``CUSTOM_DEVICE_ROOT``)
    and caches the answer, keyed by the plugin libraries and the
    ``*_VISIBLE_DEVICES`` variables. Never raises; ``ok=False`` says why.
    """
    libraries = [str(p) for p in plugin_libraries()]
    dirs = [str(p) for p in plugin_search_dirs()]
    result = run_probe(f"{__name__}:_probe_registered", [_fingerprint()], timeout=timeout,
                       cache_ttl=0.0 if refresh else DISCOVERY_TTL, cache_env=["CUSTOM_DEVICE_ROOT"])
    if not result.ok:
        error = result.error
        if result.crashed:
            error += " (a CustomDevice plugin library may have crashed Paddle on import: " + ", ".join(libraries) + ")"
        return CustomDeviceProbe(False, error=error, libraries=libraries, search_dirs=dirs)
    return CustomDeviceProbe(True, {t: int(n) for t, n in result.value["types"].items()}, libraries=libraries,
                             search_dirs=dirs)


def _probe_registered(_fingerprint: Any = None) -> dict[str, Any]:
    """(child process) Paddle's registered custom device types and their device counts."""
    pi.inference_module()
    import paddle
    from paddle.base import core

    types = paddle.device.get_all_custom_device_type() or []
    return {"paddle": paddle.__version__, "types": {t: int(core.get_custom_device_count(t)) for t in types}}


def visible_device_ids(env_name: str, count: int) -> list[int | None]:
    """Physical id of each of the ``count`` visible devices under ``env_name`` (None where unknown)."""
    value = os.environ.get(env_name)
    if value is None:
        return list(range(count))
    ids: list[int | None] = []
    for item in value.split(","):
        item = item.strip()
        if not item.isdigit():
            break
        ids.append(int(item))
    return (ids + [None] * count)[:count]


def ensure_registered(device_type: str, index: int) -> None:
    """Raise :class:`DeviceNotFoundError` unless Paddle *in this process* has ``device_type:index``.

    ``Config.enable_custom_device`` with an unregistered type aborts the
    process, and Paddle loads plugins only at its first import, so discovery
    (a child process) is not enough: the environment may have changed since.
    """
    pi.inference_module()
    import paddle
    from paddle.base import core

    types = paddle.device.get_all_custom_device_type() or []
    if device_type not in types:
        raise DeviceNotFoundError(
            f"Paddle in this process has no {device_type!r} CustomDevice plugin (registered: {types or 'none'}). "
            f"Paddle loads plugins once, when it is first imported, from CUSTOM_DEVICE_ROOT "
            f"(={os.environ.get('CUSTOM_DEVICE_ROOT', 'unset')}) or site-packages/paddle_custom_device: set it "
            f"before anything imports paddle")
    count = int(core.get_custom_device_count(device_type))
    if not 0 <= index < count:
        raise DeviceNotFoundError(f"Paddle's {device_type!r} plugin has {count} visible device(s);"
                                  f" {device_type}:{index} does not exist")
