"""The public entry points: ``devices()``, ``predictor()``, ``convert()``, ``conversion_targets()``."""

from __future__ import annotations

import logging
import shutil
from typing import Any

from hwdeploy.contract.manager import disable_plugins, get_plugin_manager
from hwdeploy.contract.model import ModelLike, load_model
from hwdeploy.contract.predictor import Predictor
from hwdeploy.contract.records import Artifact, ConversionTarget, Device, DeviceSpec
from hwdeploy.errors import (BackendError, ConversionError, DeviceNotFoundError, FallbackError, HwdeployError,
                             PluginError)
from hwdeploy.sdk.cache import build_once, cache_dir, cache_key
from hwdeploy.sdk.options import Option, OptionSchema
from hwdeploy.selection import FALLBACK_POLICIES, create_on, hwdeploy_version, select_devices

__all__ = ["clear_discovery_cache", "conversion_targets", "convert", "devices", "disable_plugins", "option_schemas",
           "predictor"]

log = logging.getLogger("hwdeploy")

#: The options ``hwdeploy.predictor`` itself takes; every other option goes to the chosen backend's schema.
PREDICTOR_OPTIONS = OptionSchema("hwdeploy.predictor", [
    Option("fallback", str, "error", "when the runtime's evidence shows the model is not (only) on the device:"
           " error (raise FallbackError), warn or allow", choices=FALLBACK_POLICIES, nullable=False),
    Option("backend", str, None, "only devices of this backend (paddle-inference, onnxruntime, openvino...)"),
])


def devices(*, refresh: bool = False, include_unavailable: bool = True) -> list[Device]:
    """Every device the installed plugins report, available ones first by priority.

    Does not import Paddle or any other heavy runtime (plugins probe drivers
    in subprocesses). The result is cached for the process; ``refresh=True``
    asks the plugins again.
    """
    result = get_plugin_manager().discover_devices(refresh)
    return result if include_unavailable else [d for d in result if d.available]


def clear_discovery_cache() -> None:
    """Forget discovered devices: the next :func:`devices` asks the plugins again (after a driver change...)."""
    get_plugin_manager().forget_devices()


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
    PREDICTOR_OPTIONS.check({"fallback": fallback, "backend": backend})
    spec = DeviceSpec.parse(device)
    if spec.mode == "fastest":
        from hwdeploy.fastest import fastest_predictor

        if backend:
            options.setdefault("backends", [backend])
        return fastest_predictor(model, fallback=fallback, **options)
    model = load_model(model)
    candidates = select_devices(spec, devices(), backend)
    if spec.kind != "auto":
        return create_on(model, candidates[0], spec, fallback, options)
    skipped = []
    for candidate in candidates:
        try:
            result = create_on(model, candidate, spec, "error", options)
        except (FallbackError, BackendError, PluginError, DeviceNotFoundError) as exc:
            skipped.append(f"{candidate.id}: {exc}")
            log.debug("hwdeploy auto: skipping %s (%s)", candidate.id, exc)
            continue
        result.add_receipt_fields(auto_skipped=skipped)
        log.debug("hwdeploy auto: chose %s (%s via plugin %s)%s", result.device.id, candidate.backend,
                 candidate.plugin, f"; skipped {skipped}" if skipped else "")
        return result
    raise DeviceNotFoundError("no candidate for 'auto' could run the model without falling back: " + "; ".join(skipped))


def option_schemas() -> list[tuple[str, OptionSchema]]:
    """(owner, schema) for ``hwdeploy.predictor``'s own options, ``auto:fastest``'s and every plugin's
    backends and conversion targets: what ``hwdeploy options`` and ``docs/options.md`` show."""
    from hwdeploy.fastest import OPTIONS as FASTEST_OPTIONS

    plugins = sorted(get_plugin_manager().option_schemas(), key=lambda item: item[1].owner)
    return [("hwdeploy", PREDICTOR_OPTIONS), ("hwdeploy", FASTEST_OPTIONS)] + plugins


def conversion_targets() -> list[tuple[str, ConversionTarget]]:
    """(plugin, target) for every conversion target the installed plugins offer."""
    return get_plugin_manager().conversion_targets()


def convert(model: ModelLike, target: str, *, refresh: bool = False, **options: Any) -> Artifact:
    """Convert ``model`` for ``target`` (any name ``conversion_targets()`` lists), cached.

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
        shutil.rmtree(final)

    def build(tmp):
        made = manager.call_first("hwdeploy_convert_model", model=model, target=target, options=dict(options),
                                  output_dir=tmp)
        if made is None:
            errors = manager.hook_errors("hwdeploy_convert_model")
            raise ConversionError(f"no plugin converted {model.name} for {target!r}"
                                  + (f"; plugin errors: {errors}" if errors else ""))
        artifact = made[1]  # an Artifact: the manager checked it
        artifact.directory = tmp
        artifact.metadata.setdefault("model", model.to_dict())
        artifact.metadata.setdefault("plugin", made[0])
        artifact.save()

    try:
        _, built = build_once(final, build)  # verifies a cached entry first; a damaged one is built again
    except HwdeployError:
        raise
    except Exception as exc:
        raise ConversionError(f"converting {model.name} for {target!r} failed: {type(exc).__name__}: {exc}") from exc
    artifact = Artifact.load(final)
    artifact.cached = not built
    return artifact
