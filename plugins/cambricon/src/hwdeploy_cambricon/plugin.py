"""Cambricon MLUs (``mlu:N``) through Paddle Inference and PaddleCustomDevice's ``mlu`` plugin.

Everything Paddle-CustomDevice-generic (discovery in a child process, the
abort-proof ``enable_custom_device``, per-op placement in the receipt) lives in
:mod:`hwdeploy.custom_device`; this module only says what is Cambricon-specific.

Paddle Lite's ``cambricon_mlu`` NNAdapter target is converted by the arm plugin
(hwdeploy-arm, which runs Lite's ``opt``); without it, this plugin declares the
target and refuses it with an error saying what to install.
"""

from __future__ import annotations

from hwdeploy import hookimpl
from hwdeploy.custom_device import CustomDeviceVendor

CAMBRICON = CustomDeviceVendor(
    kind="mlu",
    vendor="Cambricon",
    visible_env="MLU_VISIBLE_DEVICES",
    smi="cnmon",
    smi_info_args=("info",),
    smi_usage_args=("info", "-u", "-c", "{card}"),
    smi_usage_pattern=r"MLU Average\s*:\s*(\d+(?:\.\d+)?)\s*%",
    lite_target="cambricon_mlu",
    install_hint=("Install the Cambricon driver and Neuware SDK (CNToolkit, CNNL), then PaddleCustomDevice's MLU"
                  " plugin (the paddle-custom-mlu wheel matching your paddlepaddle, or build"
                  " PaddleCustomDevice/backends/mlu), or set CUSTOM_DEVICE_ROOT to the directory holding its .so"
                  " before Paddle is imported"),
)


@hookimpl
def hwdeploy_discover_devices():
    return CAMBRICON.discover()


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    return CAMBRICON.create_predictor(model, device, options)


@hookimpl
def hwdeploy_utilization_sampler(device):
    return CAMBRICON.utilization_sampler(device)


@hookimpl
def hwdeploy_conversion_targets():
    return CAMBRICON.conversion_targets()


@hookimpl
def hwdeploy_convert_model(model, target, options, output_dir):
    return CAMBRICON.convert_model(target)
