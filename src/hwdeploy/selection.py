"""Choosing a device and creating a predictor on it under a fallback policy: what ``predictor()`` and
``auto:fastest`` share. Neither user-facing module imports the other; both import this."""

from __future__ import annotations

import logging
import warnings
from importlib import metadata
from typing import Any

from hwdeploy.contract.manager import get_plugin_manager
from hwdeploy.contract.model import Model
from hwdeploy.contract.predictor import Predictor
from hwdeploy.contract.records import Device, DeviceSpec
from hwdeploy.errors import DeviceNotFoundError, FallbackError, PluginError

log = logging.getLogger("hwdeploy")

FALLBACK_POLICIES = ("error", "warn", "allow")


def hwdeploy_version() -> str:
    try:
        return metadata.version("hwdeploy")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def offered_plugins() -> dict[str, list[str]]:
    """Extras of the installed hwdeploy distribution that add plugin packages not installed yet: extra -> packages.

    Read from the package metadata (``Provides-Extra``/``Requires-Dist``), so the core names no plugin itself.
    By convention an extra is named after the device kind (or CPU backend) its plugin adds.
    """
    from packaging.requirements import Requirement

    try:
        dist = metadata.distribution("hwdeploy")
    except metadata.PackageNotFoundError:
        return {}
    extras = dist.metadata.get_all("Provides-Extra") or []
    offered: dict[str, list[str]] = {}
    for text in dist.requires or []:
        req = Requirement(text)
        if not req.name.startswith("hwdeploy-") or req.marker is None or _installed(req.name):
            continue
        for extra in extras:
            if req.marker.evaluate({"extra": extra}):
                offered.setdefault(extra, []).append(req.name)
    return offered


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def how_to_get(kind: str) -> str:
    """``"pip install 'hwdeploy[acme]' (hwdeploy-acme)"`` for a kind a not-installed plugin extra adds, else ""."""
    offered = offered_plugins()
    if kind in offered:
        return f"pip install 'hwdeploy[{kind}]' ({', '.join(offered[kind])})"
    return ""


def _describe_available(found: list[Device]) -> str:
    usable = [f"{d.id} ({d.backend})" for d in found if d.available]
    return ", ".join(usable) if usable else "none"


def select_devices(spec: DeviceSpec, found: list[Device], backend: str | None = None) -> list[Device]:
    """The candidate devices for ``spec``, best first; raises DeviceNotFoundError with reasons if none."""
    if backend:
        found = [d for d in found if d.backend == backend]
    if spec.kind == "auto":
        candidates = [d for d in found if d.available and d.priority >= 0]
        if not candidates:
            raise DeviceNotFoundError(f"no usable device for 'auto'; devices: {_describe_available(found)}")
        return candidates
    of_kind = [d for d in found if d.kind == spec.kind]
    if not of_kind:
        kinds = sorted({d.kind for d in found})
        hint = how_to_get(spec.kind) or (
            "plugins this distribution offers: " + ", ".join(f"hwdeploy[{e}]" for e in sorted(offered_plugins()))
            if offered_plugins() else "")
        raise DeviceNotFoundError(
            f"unknown device {str(spec)!r}: no installed plugin provides kind {spec.kind!r}"
            + (f" with backend {backend!r}" if backend else "")
            + (f"; to get it: {hint}" if hint else "")
            + f". Known kinds: {', '.join(kinds)}; available: {_describe_available(found)}")
    matching = [d for d in of_kind if spec.matches(d)]
    usable = [d for d in matching if d.available]
    if usable:
        return usable
    why = "; ".join(f"{d.id} [{d.plugin}/{d.backend}]: {d.reason or 'unavailable'}" for d in (matching or of_kind))
    if not matching:
        why = f"no {spec} (have: " + ", ".join(d.id for d in of_kind if d.available) + ")" if any(
            d.available for d in of_kind) else why
    raise DeviceNotFoundError(f"device {str(spec)!r} is not available: {why}. Available: {_describe_available(found)}")


def create_on(model: Model, device: Device, spec: DeviceSpec, fallback: str, options: dict[str, Any]) -> Predictor:
    """Ask the plugins for a predictor of ``model`` on ``device``, stamp its receipt, apply the fallback policy.

    ``spec`` is what the user asked for (recorded as ``receipt.requested``); ``fallback`` is ``"error"``
    (raise :class:`FallbackError` when the receipt shows fallback), ``"warn"`` or ``"allow"``.
    """
    manager = get_plugin_manager()
    created = manager.call_first("hwdeploy_create_predictor", model=model, device=device, options=dict(options))
    if created is None:
        errors = manager.hook_errors("hwdeploy_create_predictor")
        raise PluginError(f"no plugin created a predictor for {device.id} (reported by plugin {device.plugin!r})"
                          + (f"; plugin errors: {errors}" if errors else ""))
    plugin, result = created
    result.add_receipt_fields(requested=str(spec), selected=device.id, plugin=plugin,
                              plugin_version=manager.plugin_version(plugin), hwdeploy_version=hwdeploy_version(),
                              model=model.to_dict(), policy=fallback)
    receipt = result.receipt()
    reasons = receipt.fallback_reasons()
    if reasons:
        message = f"{model.name or model.program} on {device.id}: " + "; ".join(reasons)
        if fallback == "error":
            result.close()
            raise FallbackError("silent fallback refused (pass fallback='warn' or 'allow' to accept it): " + message,
                                receipt)
        if fallback == "warn":
            warnings.warn("hwdeploy fallback: " + message, RuntimeWarning, stacklevel=3)
        else:  # "allow": accepted on purpose, and in the receipt
            log.debug("hwdeploy fallback (allow): %s", message)
    else:
        log.debug("hwdeploy: %s runs on %s (%s, plugin %s)", model.name, receipt.actual, receipt.backend, plugin)
    return result
