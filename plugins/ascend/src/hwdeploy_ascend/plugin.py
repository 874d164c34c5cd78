"""Huawei Ascend NPUs (``npu:N``) through Paddle Inference and PaddleCustomDevice's ``npu`` plugin.

Everything Paddle-CustomDevice-generic (discovery in a child process, the
abort-proof ``enable_custom_device``, per-op placement in the receipt) lives in
:mod:`hwdeploy.custom_device`; this module only says what is Ascend-specific.

Paddle Lite's ``huawei_ascend_npu`` NNAdapter target is converted by the arm
plugin (hwdeploy-arm, which runs Lite's ``opt``); without it, this plugin
declares the target and refuses it with an error saying what to install.
"""

from __future__ import annotations

from hwdeploy import hookimpl
from hwdeploy.custom_device import CustomDeviceVendor

ASCEND = CustomDeviceVendor(
    kind="npu",
    vendor="Huawei Ascend",
    visible_env="ASCEND_RT_VISIBLE_DEVICES",
    smi="npu-smi",
    smi_info_args=("info",),
    smi_usage_args=("info", "-t", "usages", "-i", "{card}"),
    smi_usage_pattern=r"Aicore Usage Rate\(%\)\s*:\s*(\d+(?:\.\d+)?)",
    lite_target="huawei_ascend_npu",
    install_hint=("Install the Ascend driver and CANN toolkit, then PaddleCustomDevice's Ascend plugin (the"
                  " paddle-custom-npu wheel matching your paddlepaddle and CANN versions, or build"
                  " PaddleCustomDevice/backends/npu), or set CUSTOM_DEVICE_ROOT to the directory holding its .so"
                  " before Paddle is imported"),
)


@hookimpl
def hwdeploy_discover_devices():
    return ASCEND.discover()


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    return ASCEND.create_predictor(model, device, options)


@hookimpl
def hwdeploy_utilization_sampler(device):
    return ASCEND.utilization_sampler(device)


@hookimpl
def hwdeploy_conversion_targets():
    return ASCEND.conversion_targets()


@hookimpl
def hwdeploy_convert_model(model, target, options, output_dir):
    return ASCEND.convert_model(target)
