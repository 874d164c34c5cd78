"""Typed errors. Every failure hwdeploy reports is one of these, never a Paddle abort."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hwdeploy.contract.receipt import Receipt


class HwdeployError(Exception):
    """Base class of every error hwdeploy raises on purpose."""


class DeviceStringError(HwdeployError, ValueError):
    """A device string that cannot be parsed (``"gpu:x"``, ``"npu:-1"``, ``""``)."""


class DeviceNotFoundError(HwdeployError, LookupError):
    """A well-formed device string that names no usable device on this machine.

    The message lists the devices that are available and, for the requested
    kind, why it is absent (as the owning plugin reported it).
    """


class ModelError(HwdeployError):
    """A model that cannot be used: missing, truncated, corrupt or of unknown format."""

    def __init__(self, message: str, path: Any = None):
        super().__init__(message)
        self.path = path


class ModelNotFoundError(ModelError, FileNotFoundError):
    pass


class ModelFormatError(ModelError, ValueError):
    pass


class OptionError(HwdeployError, ValueError):
    """An option passed to ``hwdeploy.predictor``/``convert`` that the plugin does not accept.

    Plugins raise this (not a bare ValueError) for user mistakes: hwdeploy
    passes HwdeployErrors through to the caller, while any other exception
    from a plugin is treated as a broken plugin.
    """


class InputError(HwdeployError, ValueError):
    """Inputs that do not match the model: name, count, rank, shape, dtype, NaN/Inf, empty."""


class ConcurrentUseError(HwdeployError, RuntimeError):
    """One predictor was run from two threads at once: Paddle's runtimes then mix up the callers' outputs.

    Give each thread its own ``predictor.clone()``.
    """


class FallbackError(HwdeployError):
    """The requested device is not (entirely) where the model really runs.

    ``receipt`` holds the evidence (requested vs actual device, per-op placement).
    """

    def __init__(self, message: str, receipt: "Receipt"):
        super().__init__(message)
        self.receipt = receipt


class ConversionError(HwdeployError):
    """A model could not be converted for a target."""


class UnsupportedOpsError(ConversionError):
    """The target cannot express some ops of the model; ``ops`` names every one."""

    def __init__(self, message: str, ops: list[str]):
        super().__init__(message)
        self.ops = sorted(set(ops))


class BackendError(HwdeployError, RuntimeError):
    """A runtime failed while creating or running a predictor (crash, hang, error)."""


class PluginError(HwdeployError):
    """A plugin failed to load, is incompatible, or broke a hook contract."""
