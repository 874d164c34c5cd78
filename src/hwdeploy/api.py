"""The public entry points: ``devices()``, ``predictor()``, ``convert()``."""

from __future__ import annotations

import logging
import threading
import warnings
from importlib import metadata
from typing import Any

from hwdeploy.sdk.cache import build_once, cache_dir, cache_key
from hwdeploy.contract.records import Device, DeviceSpec
from hwdeploy.errors import (BackendError, ConversionError, DeviceNotFoundError, FallbackError, HwdeployError,
                             PluginError)
from hwdeploy.contract.model import Model, ModelLike, load_model
from hwdeploy.contract.manager import get_plugin_manager
from hwdeploy.contract.predictor import Predictor
from hwdeploy.contract.records import Artifact, ConversionTarget

log = logging.getLogger("hwdeploy")

FALLBACK_POLICIES = ("error", "warn", "allow")

_discovery_lock = threading.Lock()
_discovered: list[Device] | None = None


def hwdeploy_version() -> str:
    try:
        return metadata.version("hwdeploy")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def clear_discovery_cache() -> None:
    global _discovered
    with _discovery_lock:
        _discovered = None


def _check_devices(result: Any) -> str | None:
    if not isinstance(result, list) or not all(isinstance(d, Device) for d in result):
        return f"{type(result).__name__} instead of a list of hwdeploy.Device"
    return None


def devices(*, refresh: bool = False, include_unavailable: bool = True) -> list[Device]:
    """Every device the installed plugins report, available ones first by priority.

    Does not import Paddle or any other heavy runtime (plugins probe drivers
    in subprocesses). The result is cached for the process; ``refresh=True``
    asks the plugins again.
    """
    global _discovered
    with _discovery_lock:
        if _discovered is None or refresh:
            found: list[Device] = []
            for plugin, result in get_plugin_manager().call_all("hwdeploy_discover_devices", check=_check_devices):
                for device in result:
                    device.plugin = device.plugin or plugin
                    found.append(device)
            found.sort(key=lambda d: (not d.available, -d.priority, d.kind, d.index))
            _discovered = found
        result = list(_discovered)
    return result if include_unavailable else [d for d in result if d.available]


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
        raise DeviceNotFoundError(
            f"unknown device {str(spec)!r}: no installed plugin provides kind {spec.kind!r}"
            + (f" with backend {backend!r}" if backend else "")
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


def predictor(model: ModelLike, device: str = "auto", *, fallback: str = "error", backend: str | None = None,
              **options: Any) -> Predictor:
    """Load ``model`` on ``device`` and return a :class:`Predictor`.

    - ``device``: ``"auto"`` (best available, by plugin priority), a kind
      (``"gpu"``, ``"npu"``: its first available device) or ``"kind:index"``.
    - ``fallback``: what to do when the runtime's own evidence shows the model
      does not really run (entirely) on the device: ``"error"`` (default:
      raise :class:`FallbackError` carrying the receipt), ``"warn"`` or
      ``"allow"``. For ``"auto"``, a candidate that falls back is skipped in
      favour of the next one.
    - ``backend``: restrict to devices of one backend (``"paddle-inference"``...).
    - other ``options`` go to the plugin (``threads``, ``precision``...).
    """
    if fallback not in FALLBACK_POLICIES:
        raise ValueError(f"fallback must be one of {FALLBACK_POLICIES}, got {fallback!r}")
    spec = DeviceSpec.parse(device)
    if spec.mode == "fastest":
        from hwdeploy.fastest import fastest_predictor

        if backend:
            options.setdefault("backends", [backend])
        return fastest_predictor(model, fallback=fallback, **options)
    model = load_model(model)
    candidates = select_devices(spec, devices(), backend)
    if spec.kind != "auto":
        return _create(model, candidates[0], spec, fallback, options)
    skipped = []
    for candidate in candidates:
        try:
            result = _create(model, candidate, spec, "error", options)
        except (FallbackError, BackendError, PluginError, DeviceNotFoundError) as exc:
            skipped.append(f"{candidate.id}: {exc}")
            log.info("hwdeploy auto: skipping %s (%s)", candidate.id, exc)
            continue
        result.add_receipt_fields(auto_skipped=skipped)
        log.info("hwdeploy auto: chose %s (%s via plugin %s)%s", result.device.id, candidate.backend,
                 candidate.plugin, f"; skipped {skipped}" if skipped else "")
        return result
    raise DeviceNotFoundError("no candidate for 'auto' could run the model without falling back: " + "; ".join(skipped))


def _check_predictor(result: Any) -> str | None:
    return None if isinstance(result, Predictor) else f"{type(result).__name__} instead of a hwdeploy.Predictor"


def _create(model: Model, device: Device, spec: DeviceSpec, fallback: str, options: dict[str, Any]) -> Predictor:
    manager = get_plugin_manager()
    created = manager.call_first("hwdeploy_create_predictor", check=_check_predictor, model=model, device=device,
                                 options=dict(options))
    if created is None:
        errors = {name: s.hook_errors["hwdeploy_create_predictor"] for name, s in manager.statuses.items()
                  if "hwdeploy_create_predictor" in s.hook_errors}
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
        log.warning("hwdeploy fallback (%s): %s", fallback, message)
    else:
        log.info("hwdeploy: %s runs on %s (%s, plugin %s)", model.name, receipt.actual, receipt.backend, plugin)
    return result


def conversion_targets() -> list[tuple[str, ConversionTarget]]:
    """(plugin, target) for every conversion target the installed plugins offer."""
    out = []
    for plugin, targets in get_plugin_manager().call_all("hwdeploy_conversion_targets"):
        out.extend((plugin, t) for t in targets if isinstance(t, ConversionTarget))
    return out


def convert(model: ModelLike, target: str, *, refresh: bool = False, **options: Any) -> Artifact:
    """Convert ``model`` for ``target`` (``"arm"``, ``"webgl"``, ``"tensorrt"``...), cached.

    The cache key is the model's content hash, the target, the options and the
    converting plugin's version; a second call returns the cached artifact
    (``artifact.cached is True``).
    """
    model = load_model(model)
    targets = conversion_targets()
    owners = [plugin for plugin, t in targets if t.name == target]
    if not owners:
        known = ", ".join(sorted({t.name for _, t in targets})) or "none"
        raise ConversionError(f"unknown conversion target {target!r}; installed plugins offer: {known}")
    manager = get_plugin_manager()
    key = cache_key(model.sha256, target, options, [manager.plugin_version(p) for p in owners], hwdeploy_version())
    final = cache_dir("convert", target) / key
    if refresh and final.exists():
        import shutil

        shutil.rmtree(final)
    if (final / "artifact.json").exists():
        artifact = Artifact.load(final)
        artifact.cached = True
        return artifact

    def build(tmp):
        made = manager.call_first("hwdeploy_convert_model", model=model, target=target, options=dict(options),
                                  output_dir=tmp)
        if made is None:
            errors = {n: s.hook_errors.get("hwdeploy_convert_model") for n, s in manager.statuses.items()
                      if s.hook_errors.get("hwdeploy_convert_model")}
            raise ConversionError(f"no plugin converted {model.name} for {target!r}"
                                  + (f"; plugin errors: {errors}" if errors else ""))
        artifact = made[1]
        if not isinstance(artifact, Artifact):
            raise PluginError(f"plugin {made[0]} returned {type(artifact).__name__} instead of an Artifact")
        artifact.directory = tmp
        artifact.metadata.setdefault("model", model.to_dict())
        artifact.metadata.setdefault("plugin", made[0])
        artifact.save()

    try:
        build_once(final, build)
    except HwdeployError:
        raise
    except Exception as exc:
        raise ConversionError(f"converting {model.name} for {target!r} failed: {type(exc).__name__}: {exc}") from exc
    return Artifact.load(final)
