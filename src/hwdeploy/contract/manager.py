"""Loading plugins from the ``hwdeploy`` entry-point group and calling their hooks safely."""

from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable

import pluggy
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from hwdeploy.contract import hookspecs
from hwdeploy.errors import PluginError

log = logging.getLogger("hwdeploy")

ENTRY_POINT_GROUP = "hwdeploy"
#: Distributions whose installed version a plugin's requirements are checked against.
CHECKED_DISTRIBUTIONS = ("hwdeploy", "paddlepaddle", "paddlepaddle-gpu")
# A plugin that asks for "paddlepaddle" is satisfied by the GPU build too.
_ALIASES = {"paddlepaddle": ("paddlepaddle", "paddlepaddle-gpu")}


@dataclass
class PluginStatus:
    """What ``hwdeploy plugins`` shows for one plugin."""

    name: str
    state: str  # "loaded" | "import-failed" | "incompatible" | "hook-failed"
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


class PluginManager:
    """pluggy's manager plus a record of every plugin's fate and fault-isolated hook calls."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.statuses: dict[str, PluginStatus] = {}
        self.versions: dict[str, str] = {}  # plugin name -> distribution version

    # ------------------------------------------------------------ loading
    def load_entry_points(self) -> None:
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in self.statuses:
                continue
            dist = getattr(ep, "dist", None)
            status = PluginStatus(ep.name, "loaded", module=ep.value,
                                  distribution=dist.metadata["Name"] if dist else "",
                                  version=dist.version if dist else "",
                                  requires=[r for r in (dist.requires or []) if _is_checked(r)] if dist else [])
            self.statuses[ep.name] = status
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
        # A hookimpl with no matching hookspec is a typo that would silently never be called.
        unknown = [impl.function.__name__ for caller in self.pm.get_hookcallers(plugin) or []
                   if not caller.has_spec() for impl in caller.get_hookimpls() if impl.plugin is plugin]
        if unknown:
            self.pm.unregister(plugin, name=name)
            status.state = "import-failed"
            status.error = f"implements unknown hook(s) {unknown}; known: {sorted(self.pm.hook.__dict__)}"
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

    def _call_one(self, impl: pluggy.HookImpl, hook_name: str, kwargs: dict[str, Any],
                  check: Callable[[Any], str | None] | None) -> tuple[bool, Any]:
        try:
            result = impl.function(**{k: kwargs[k] for k in impl.argnames})
            problem = check(result) if check and result is not None else None
            if problem:
                raise PluginError(f"returned {problem}")
            return True, result
        except Exception as exc:
            from hwdeploy.errors import HwdeployError

            if isinstance(exc, HwdeployError) and not isinstance(exc, PluginError):
                raise  # a deliberate, typed answer (e.g. UnsupportedOpsError): the caller should see it
            self._record_hook_error(impl.plugin_name, hook_name, exc)
            return False, None

    def _record_hook_error(self, plugin: str, hook_name: str, exc: BaseException) -> None:
        status = self.statuses.setdefault(plugin, PluginStatus(plugin, "loaded"))
        status.hook_errors[hook_name] = _describe(exc)
        log.warning("hwdeploy plugin %s failed in %s: %s", plugin, hook_name, status.hook_errors[hook_name])
        log.debug("%s", "".join(traceback.format_exception(exc)))

    def call_all(self, hook_name: str, check: Callable[[Any], str | None] | None = None,
                 **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation; a failing plugin is recorded and skipped. Returns (plugin, result)."""
        results = []
        for impl in self._impls(hook_name):
            ok, result = self._call_one(impl, hook_name, kwargs, check)
            if ok and result is not None:
                results.append((impl.plugin_name, result))
        return results

    def call_first(self, hook_name: str, check: Callable[[Any], str | None] | None = None,
                   **kwargs: Any) -> tuple[str, Any] | None:
        """firstresult semantics with fault isolation: the first non-None result and its plugin."""
        for impl in self._impls(hook_name):
            ok, result = self._call_one(impl, hook_name, kwargs, check)
            if ok and result is not None:
                return impl.plugin_name, result
        return None

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
        _manager = None
    from hwdeploy import api

    api.clear_discovery_cache()
