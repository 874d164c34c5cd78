"""One vendor's Paddle CustomDevice, described once; the vendor plugin's hooks forward to it.

Everything a CustomDevice vendor plugin differs in is data (its device kind,
visible-devices variable, management tool, install hint), so a plugin is one
:class:`CustomDeviceVendor` and ``globals().update(VENDOR.hookimpls())``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hwdeploy.contract.hookspecs import hookimpl
from hwdeploy.contract.model import Model
from hwdeploy.contract.records import Device
from hwdeploy.sdk import paddle_inference as pi
from hwdeploy.sdk.options import CHECK_FINITE, THREADS, Option, OptionSchema

from hwdeploy_customdevice.discovery import registered_custom_devices, visible_device_ids
from hwdeploy_customdevice.predictor import CustomDevicePredictor, create_custom_device_predictor
from hwdeploy_customdevice.smi import SmiSampler, run_smi

BACKEND = pi.BACKEND
#: Options ``hwdeploy.predictor`` accepts for a custom device (checked per vendor, named after its kind).
OPTION_LIST = [
    THREADS,
    Option("ir_optim", bool, True, "Paddle's graph optimisation passes", nullable=False),
    Option("onednn", bool, False, "oneDNN kernels for the ops that fall back to the host", nullable=False),
    Option("optim_cache", bool, True, "cache the optimised program on disk", nullable=False),
    CHECK_FINITE,
    Option("precision", str, "fp32", "numeric precision", choices=("fp32",), nullable=False),
    Option("warmup_inputs", (list, tuple), None, "inputs of the warm-up run that records per-op placement"
           " (default: made up from the input specs)"),
]


@dataclass(frozen=True)
class CustomDeviceVendor:
    """One vendor's Paddle CustomDevice, described once; its plugin's hooks forward to these methods."""

    kind: str  # hwdeploy device kind, also Paddle's device type unless ``paddle_type`` says otherwise
    vendor: str  # "Huawei Ascend"
    visible_env: str  # the runtime's visible-devices variable
    smi: str  # vendor management tool on PATH ("npu-smi")
    install_hint: str  # how to get Paddle's plugin for this device (discovery adds the CUSTOM_DEVICE_ROOT way)
    smi_info_args: tuple[str, ...] = ("info",)
    #: argv (``{card}`` = physical id) and regex (group 1 = busy %) of a utilisation reading.
    smi_usage_args: tuple[str, ...] = ()
    smi_usage_pattern: str = ""
    paddle_type: str = ""
    priority: int = 90

    @property
    def device_type(self) -> str:
        return self.paddle_type or self.kind

    # ---- discovery
    def discover(self) -> list[Device]:
        """The devices Paddle's plugin for this type reports, or one absent entry saying why."""
        version = pi.paddle_version()
        smi = run_smi([self.smi, *self.smi_info_args])
        visible = os.environ.get(self.visible_env)
        details: dict[str, Any] = {"paddle_device_type": self.device_type, "smi": smi.summary(),
                                   self.visible_env: visible}
        if not version:
            return [self._absent("paddlepaddle is not installed (pip install paddlepaddle)", details)]
        probe = registered_custom_devices()
        details.update(plugin_libraries=probe.libraries, plugin_search_dirs=probe.search_dirs)
        if not probe.ok:
            return [self._absent(f"probing Paddle's CustomDevice plugins failed: {probe.error}", details)]
        count = probe.types.get(self.device_type)
        if count is None:
            where = ", ".join(probe.search_dirs) or "nowhere"
            found = ", ".join(Path(p).name for p in probe.libraries) or "no plugin libraries"
            registered = ", ".join(sorted(probe.types)) or "none"
            return [self._absent(
                f"Paddle has no {self.device_type!r} CustomDevice plugin (searched {where}: {found}; registered"
                f" types: {registered}); {smi.summary()}. {self.install_hint}, or set CUSTOM_DEVICE_ROOT to the"
                " directory holding its .so before Paddle is imported", details)]
        if count == 0:
            hidden = f"; {self.visible_env}={visible!r} hides them" if visible is not None else ""
            return [self._absent(f"Paddle's {self.device_type!r} plugin is loaded but reports no visible device"
                                 f"{hidden}; {smi.summary()}", details)]
        versions = {"paddlepaddle": version}
        physical = visible_device_ids(self.visible_env, count)
        return [Device(self.kind, i, name=f"{self.vendor} {self.device_type}:{i} (Paddle CustomDevice)",
                       backend=BACKEND, priority=self.priority, versions=dict(versions),
                       details={**details, "physical_id": physical[i]})
                for i in range(count)]

    def _absent(self, reason: str, details: dict[str, Any]) -> Device:
        return Device(self.kind, 0, name=f"{self.vendor} {self.kind}", backend=BACKEND, available=False,
                      reason=reason, priority=self.priority, details=details)

    # ---- predictor
    @property
    def options(self) -> OptionSchema:
        """The options this vendor's predictors accept (``hwdeploy options`` lists them)."""
        return OptionSchema(f"{self.kind} backend", OPTION_LIST)

    def create_predictor(self, model: Model, device: Device, options: dict[str, Any]) -> CustomDevicePredictor | None:
        """A predictor for ``device`` if it is this vendor's, else None (the hook's contract)."""
        if device.kind != self.kind or device.backend != BACKEND:
            return None
        settings = self.options.check(options)
        settings.pop("precision")  # fp32, the only choice
        return create_custom_device_predictor(model, device, self.device_type, options=options, **settings)

    # ---- utilisation
    def utilization_sampler(self, device: Device, interval: float = 0.2) -> SmiSampler | None:
        """A sampler through the vendor tool, or None when the tool is not on PATH."""
        if device.kind != self.kind or not self.smi_usage_args or shutil.which(self.smi) is None:
            return None
        card = device.details.get("physical_id")
        card = device.index if card is None else card
        argv = [self.smi, *(arg.format(card=card) for arg in self.smi_usage_args)]
        return SmiSampler(argv, self.smi_usage_pattern, interval)

    # ---- the plugin's hooks
    def hookimpls(self) -> dict[str, Callable[..., Any]]:
        """This vendor's hwdeploy hooks by name (discovery, predictors, the sampler, its option schema),
        each an ``@hookimpl`` function forwarding to this object.

        A vendor module binds them as its own attributes, where pluggy looks:
        ``globals().update(ACME.hookimpls())``. No conversion hook: Paddle
        Inference runs the model as it is; a plugin that also converts (for
        its vendor's own toolchain) writes those hooks itself.
        """

        def hwdeploy_discover_devices():
            return self.discover()

        def hwdeploy_create_predictor(model, device, options):
            return self.create_predictor(model, device, options)

        def hwdeploy_utilization_sampler(device):
            return self.utilization_sampler(device)

        def hwdeploy_option_schemas():
            return [self.options]

        return {hook.__name__: hookimpl(hook) for hook in (
            hwdeploy_discover_devices, hwdeploy_create_predictor, hwdeploy_utilization_sampler,
            hwdeploy_option_schemas)}
