"""Loading plugins from the ``hwdeploy`` entry-point group, and the one place every hook's contract is enforced.

Every hook result passes :data:`RESULT_CHECKS` here; a plugin that breaks a contract (wrong type, a duplicate
conversion-target or command name, a hook wrapper, an unknown hook, an exception) is marked in its
:class:`PluginStatus` (``hwdeploy plugins`` shows it) and its result never reaches the caller.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable

import pluggy
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from hwdeploy.contract import hookspecs
from hwdeploy.contract.predictor import Predictor
from hwdeploy.contract.records import Artifact, CliCommand, ConversionTarget, Device
from hwdeploy.errors import HwdeployError, PluginError
from hwdeploy.sdk.options import OptionSchema

log = logging.getLogger("hwdeploy")

ENTRY_POINT_GROUP = "hwdeploy"
#: Comma-separated plugin (entry-point) names that are never imported: ``HWDEPLOY_DISABLE_PLUGINS=acme,onnxruntime``.
DISABLE_ENV = "HWDEPLOY_DISABLE_PLUGINS"
#: Distributions whose installed version a plugin's requirements are checked against.
CHECKED_DISTRIBUTIONS = ("hwdeploy", "paddlepaddle", "paddlepaddle-gpu")
# A plugin that asks for "paddlepaddle" is satisfied by the GPU build too.
_ALIASES = {"paddlepaddle": ("paddlepaddle", "paddlepaddle-gpu")}


@dataclass
class PluginStatus:
    """What ``hwdeploy plugins`` shows for one plugin."""

    name: str
    state: str  # "loaded" | "import-failed" | "incompatible" | "disabled" (and "hook-failed" once a hook broke)
    module: str = ""
    distribution: str = ""
    version: str = ""
    requires: list[str] = field(default_factory=list)
    error: str = ""
    hook_errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "loaded" and not self.hook_errors

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state if not self.hook_errors else "hook-failed",
                "module": self.module, "distribution": self.distribution, "version": self.version,
                "requires": self.requires, "error": self.error, "hook_errors": self.hook_errors}


def incompatibilities(dist: metadata.Distribution | None) -> list[str]:
    """Requirements of ``dist`` on hwdeploy/Paddle that the installed versions do not meet."""
    if dist is None:
        return []
    problems = []
    for text in dist.requires or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        name = req.name.lower().replace("_", "-")
        if name not in CHECKED_DISTRIBUTIONS or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        installed = [v for v in (_installed(n) for n in _ALIASES.get(name, (name,))) if v]
        if not installed:
            problems.append(f"requires {req} but {name} is not installed")
        elif not any(req.specifier.contains(v, prereleases=True) for v in installed):
            problems.append(f"requires {req} but {name} {installed[0]} is installed")
    return problems


def _installed(name: str) -> Version | None:
    try:
        return Version(metadata.version(name))
    except (metadata.PackageNotFoundError, InvalidVersion):
        return None


def _list_of(kind: type, what: str) -> Callable[[Any], str | None]:
    def check(result: Any) -> str | None:
        if not isinstance(result, list) or not all(isinstance(item, kind) for item in result):
            return f"{_type_name(result)} instead of a list of {what}"
        return None
    return check


def _instance_of(kind: type, what: str) -> Callable[[Any], str | None]:
    return lambda result: None if isinstance(result, kind) else f"{_type_name(result)} instead of {what}"


def _check_sampler(result: Any) -> str | None:
    missing = [f"{name}()" for name in ("start", "stop") if not callable(getattr(result, name, None))]
    return f"{_type_name(result)} without {' and '.join(missing)} (a UtilizationSampler)" if missing else None


def _type_name(value: Any) -> str:
    return "a list" if isinstance(value, list) else type(value).__name__


#: What every hook must return when it returns anything other than None: the whole contract, in one place.
RESULT_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "hwdeploy_discover_devices": _list_of(Device, "hwdeploy.Device"),
    "hwdeploy_conversion_targets": _list_of(ConversionTarget, "hwdeploy.ConversionTarget"),
    "hwdeploy_convert_model": _instance_of(Artifact, "a hwdeploy.Artifact"),
    "hwdeploy_create_predictor": _instance_of(Predictor, "a hwdeploy.Predictor"),
    "hwdeploy_utilization_sampler": _check_sampler,
    "hwdeploy_cli_commands": _list_of(CliCommand, "hwdeploy.CliCommand"),
    "hwdeploy_option_schemas": _list_of(OptionSchema, "hwdeploy.sdk.options.OptionSchema"),
}


def disabled_plugins() -> set[str]:
    """Plugin names kept from loading: ``$HWDEPLOY_DISABLE_PLUGINS`` plus :func:`disable_plugins`."""
    from_env = {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}
    return from_env | _disabled


_disabled: set[str] = set()


class PluginManager:
    """pluggy's manager plus a record of every plugin's fate and fault-isolated hook calls."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.statuses: dict[str, PluginStatus] = {}
        self._devices: list[Device] | None = None  # discovery, cached for the manager's life
        self._devices_lock = threading.Lock()

    # ------------------------------------------------------------ loading
    def load_entry_points(self) -> None:
        disabled = disabled_plugins()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in self.statuses:
                continue
            dist = getattr(ep, "dist", None)
            status = PluginStatus(ep.name, "loaded", module=ep.value,
                                  distribution=dist.metadata["Name"] if dist else "",
                                  version=dist.version if dist else "",
                                  requires=[r for r in (dist.requires or []) if _is_checked(r)] if dist else [])
            self.statuses[ep.name] = status
            if ep.name in disabled:
                status.state, status.error = "disabled", f"disabled by {DISABLE_ENV} or hwdeploy.disable_plugins()"
                continue
            problems = incompatibilities(dist)
            if problems:  # checked before the module is even imported
                status.state, status.error = "incompatible", "; ".join(problems)
                log.warning("hwdeploy plugin %s skipped: %s", ep.name, status.error)
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, even SystemExit
                if isinstance(exc, KeyboardInterrupt):
                    raise
                status.state, status.error = "import-failed", _describe(exc)
                log.warning("hwdeploy plugin %s failed to import: %s", ep.name, status.error)
                continue
            self.register(plugin, ep.name, status)

    def register(self, plugin: Any, name: str, status: PluginStatus | None = None) -> None:
        status = status or PluginStatus(name, "loaded", module=getattr(plugin, "__name__", repr(plugin)))
        self.statuses[name] = status
        try:
            self.pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            status.state, status.error = "import-failed", _describe(exc)
            log.warning("hwdeploy plugin %s rejected: %s", name, status.error)
            return
        impls = [impl for caller in self.pm.get_hookcallers(plugin) or [] for impl in caller.get_hookimpls()
                 if impl.plugin is plugin]
        # A hookimpl with no matching hookspec is a typo that would silently never be called.
        unknown = [impl.function.__name__ for impl in impls if not getattr(self.pm.hook, impl.function.__name__).has_spec()]
        # hwdeploy calls each implementation on its own (to isolate faults), so a wrapper would never wrap anything.
        wrappers = [impl.function.__name__ for impl in impls if impl.hookwrapper or getattr(impl, "wrapper", False)]
        problem = (f"implements unknown hook(s) {unknown}; known: {sorted(RESULT_CHECKS)}" if unknown else
                   f"declares hook wrapper(s) {wrappers}: hwdeploy calls every plugin's hook on its own, fault-isolated,"
                   " so wrappers are not supported; implement the hook plainly" if wrappers else "")
        if problem:
            self.pm.unregister(plugin, name=name)
            status.state, status.error = "import-failed", problem
            log.warning("hwdeploy plugin %s rejected: %s", name, status.error)

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin, name=name)
        self.statuses.pop(name, None)

    # ------------------------------------------------------------ calling
    def _impls(self, hook_name: str) -> list[pluggy.HookImpl]:
        # pluggy calls implementations in reverse registration order (tryfirst/trylast honoured).
        return list(reversed(getattr(self.pm.hook, hook_name).get_hookimpls()))

    def _call_one(self, impl: pluggy.HookImpl, hook_name: str, kwargs: dict[str, Any]) -> tuple[bool, Any]:
        check = RESULT_CHECKS[hook_name]
        try:
            result = impl.function(**{k: kwargs[k] for k in impl.argnames})
            problem = check(result) if result is not None else None
            if problem:
                raise PluginError(f"returned {problem}")
            return True, result
        except Exception as exc:
            if isinstance(exc, HwdeployError) and not isinstance(exc, PluginError):
                raise  # a deliberate, typed answer (e.g. UnsupportedOpsError): the caller should see it
            self.record_hook_error(impl.plugin_name, hook_name, exc)
            return False, None

    def record_hook_error(self, plugin: str, hook_name: str, exc: BaseException) -> None:
        """Mark ``plugin`` as having broken ``hook_name`` (shown by ``hwdeploy plugins``)."""
        status = self.statuses.setdefault(plugin, PluginStatus(plugin, "loaded"))
        status.hook_errors[hook_name] = _describe(exc)
        log.warning("hwdeploy plugin %s failed in %s: %s", plugin, hook_name, status.hook_errors[hook_name])
        log.debug("%s", "".join(traceback.format_exception(exc)))

    def call_all(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation; a failing plugin is recorded and skipped. Returns (plugin, result)."""
        results = []
        for impl in self._impls(hook_name):
            ok, result = self._call_one(impl, hook_name, kwargs)
            if ok and result is not None:
                results.append((impl.plugin_name, result))
        return results

    def call_first(self, hook_name: str, **kwargs: Any) -> tuple[str, Any] | None:
        """firstresult semantics with fault isolation: the first non-None result and its plugin."""
        for impl in self._impls(hook_name):
            ok, result = self._call_one(impl, hook_name, kwargs)
            if ok and result is not None:
                return impl.plugin_name, result
        return None

    def hook_errors(self, hook_name: str) -> dict[str, str]:
        """Plugin -> error, for every plugin that failed ``hook_name`` (for error messages)."""
        return {name: s.hook_errors[hook_name] for name, s in self.statuses.items() if hook_name in s.hook_errors}

    # ------------------------------------------------------------ the merged answers of all plugins
    def discover_devices(self, refresh: bool = False) -> list[Device]:
        """Every plugin's devices, available ones first by priority; cached until ``refresh``."""
        with self._devices_lock:
            if self._devices is None or refresh:
                found: list[Device] = []
                for plugin, result in self.call_all("hwdeploy_discover_devices"):
                    for device in result:
                        device.plugin = device.plugin or plugin
                        found.append(device)
                found.sort(key=lambda d: (not d.available, -d.priority, d.kind, d.index))
                self._devices = found
            return list(self._devices)

    def forget_devices(self) -> None:
        with self._devices_lock:
            self._devices = None

    def conversion_targets(self) -> list[tuple[str, ConversionTarget]]:
        """(plugin, target) for every target; a name offered twice stays with the first plugin, the other is marked."""
        return self._unique("hwdeploy_conversion_targets", "conversion target")

    def cli_commands(self, reserved: Iterable[str] = ()) -> list[tuple[str, CliCommand]]:
        """(plugin, command) for every plugin command whose name is neither built in (``reserved``) nor taken."""
        return self._unique("hwdeploy_cli_commands", "command", reserved={name: "hwdeploy itself" for name in reserved})

    def option_schemas(self) -> list[tuple[str, OptionSchema]]:
        """(plugin, schema) for every declared option schema; a schema name declared twice stays with the first."""
        return self._unique("hwdeploy_option_schemas", "option schema")

    def _unique(self, hook_name: str, what: str, reserved: dict[str, str] | None = None) -> list[tuple[str, Any]]:
        owners = dict(reserved or {})
        kept = []
        for plugin, items in self.call_all(hook_name):
            for item in items:
                if item.name in owners:
                    self.record_hook_error(plugin, hook_name, PluginError(
                        f"{what} {item.name!r} is already provided by {owners[item.name]}; this one is ignored"))
                    continue
                owners[item.name] = f"plugin {plugin!r}"
                kept.append((plugin, item))
        return kept

    def plugin_version(self, name: str) -> str:
        status = self.statuses.get(name)
        return status.version if status else ""


def _is_checked(requirement: str) -> bool:
    try:
        return Requirement(requirement).name.lower() in CHECKED_DISTRIBUTIONS
    except InvalidRequirement:
        return False


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_manager: PluginManager | None = None
_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide manager, loading entry points on first use."""
    global _manager
    with _lock:
        if _manager is None:
            manager = PluginManager()
            manager.load_entry_points()
            _manager = manager
        return _manager


def reset_plugin_manager() -> None:
    """Forget loaded plugins (tests, or after installing a plugin at run time)."""
    global _manager
    with _lock:
        _manager = None  # its discovery cache goes with it


def disable_plugins(names: Iterable[str] = ()) -> None:
    """Keep the plugins named ``names`` from loading, in addition to ``$HWDEPLOY_DISABLE_PLUGINS``.

    Takes effect at once (the plugin manager is reloaded); ``disable_plugins()`` enables them all again.
    """
    global _disabled
    _disabled = {str(name) for name in names}
    reset_plugin_manager()
