"""The Paddle CustomDevice family for hwdeploy: what every CustomDevice vendor plugin shares.

Paddle runs on accelerators such as Huawei Ascend (``npu``) or Cambricon
(``mlu``) through a vendor *CustomDevice plugin*: a shared library that Paddle
loads from ``$CUSTOM_DEVICE_ROOT`` (else ``site-packages/paddle_custom_device/``)
when it is first imported, and that registers a device type plus kernels for
it. Paddle Inference then runs a model there with
``Config.enable_custom_device(type, id)``; every op without a kernel on the
device falls back to the CPU *silently*.

A vendor plugin describes its device with a :class:`CustomDeviceVendor` and
takes its hooks from it (pluggy finds a plugin's hooks as its module's attributes)::

    from hwdeploy_customdevice import CustomDeviceVendor

    ACME = CustomDeviceVendor(kind="npu", vendor="Acme", visible_env="ACME_VISIBLE_DEVICES",
                              smi="acme-smi", install_hint="pip install paddle-custom-acme")

    globals().update(ACME.hookimpls())  # hwdeploy_discover_devices, hwdeploy_create_predictor, ...

What the family adds on top of Paddle, one module each:

- :mod:`.discovery`: in a child process, so a broken plugin library cannot
  take the caller down and the caller never imports Paddle; cached, keyed by
  the plugin libraries on disk and the visible-devices variables. Plus the
  in-process check that keeps ``enable_custom_device`` from aborting.
- :mod:`.placement`: per-op placement from Paddle's own kernel program
  (:mod:`hwdeploy.sdk.paddle_kernels`), each host op labelled
  :data:`~hwdeploy.contract.receipt.NO_KERNEL`,
  :data:`~hwdeploy.contract.receipt.CARRIED_PLACEMENT` or
  :data:`~hwdeploy.contract.receipt.FORCED_OFF` (``CUSTOM_DEVICE_BLACK_LIST``).
- :mod:`.predictor`: the predictor whose receipt carries that placement, read
  once at creation with a warm-up run; ``run()`` pays nothing for it.
- :mod:`.smi`: the vendor management tool, for discovery and utilisation.
- :mod:`.vendor`: :class:`CustomDeviceVendor`, the plugin's hooks.
- :mod:`.simulated`: a simulated CustomDevice (real C++ Paddle loads), built
  on demand as any device type, and :mod:`.testing`: the tests every vendor
  plugin runs on it (see this package's README).
"""

from __future__ import annotations

from hwdeploy_customdevice.discovery import (CustomDeviceProbe, ensure_registered, plugin_libraries,
                                             plugin_search_dirs, registered_custom_devices, visible_device_ids)
from hwdeploy_customdevice.placement import (BLACK_LIST_ENV, Placement, black_list, classify, device_kernels,
                                             kernel_inventory)
from hwdeploy_customdevice.predictor import CustomDevicePredictor, create_custom_device_predictor, sample_inputs
from hwdeploy_customdevice.smi import SmiReport, SmiSampler, run_smi
from hwdeploy_customdevice.vendor import BACKEND, OPTION_LIST, CustomDeviceVendor

__all__ = [
    "BACKEND", "BLACK_LIST_ENV", "OPTION_LIST", "CustomDevicePredictor", "CustomDeviceProbe", "CustomDeviceVendor",
    "Placement", "SmiReport", "SmiSampler", "black_list", "classify", "create_custom_device_predictor",
    "device_kernels", "ensure_registered", "kernel_inventory", "plugin_libraries", "plugin_search_dirs",
    "registered_custom_devices", "run_smi", "sample_inputs", "visible_device_ids",
]
