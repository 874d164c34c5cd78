"""Huawei Ascend NPUs (``npu:N``) through Paddle Inference and PaddleCustomDevice's ``npu`` plugin.

Everything Paddle-CustomDevice-generic (discovery in a child process, the
abort-proof ``enable_custom_device``, per-op placement in the receipt, the
plugin's hooks themselves) lives in :mod:`hwdeploy.custom_device`; this module
only says what is Ascend-specific.

Paddle Lite's ``huawei_ascend_npu`` NNAdapter target is converted by the arm
plugin (hwdeploy-arm, which runs Lite's ``opt``); without it, this plugin
declares the target and refuses it with an error saying what to install.
"""

from __future__ import annotations

from hwdeploy.custom_device import CustomDeviceVendor

ASCEND = CustomDeviceVendor(
    kind="npu",  # also Paddle's device type, registered by PaddleCustomDevice's Ascend plugin
    vendor="Huawei Ascend",
    visible_env="ASCEND_RT_VISIBLE_DEVICES",  # CANN's runtime: which NPUs this process sees
    install_hint=("Install the Ascend driver and CANN toolkit, then PaddleCustomDevice's Ascend plugin (the"
                  " paddle-custom-npu wheel matching your paddlepaddle and CANN versions, or build"
                  " PaddleCustomDevice/backends/npu)"),
    # `npu-smi info` is reported by discovery; the sampler reads the AI Core busy rate of one card.
    smi="npu-smi",
    smi_usage_args=("info", "-t", "usages", "-i", "{card}"),
    smi_usage_pattern=r"Aicore Usage Rate\(%\)\s*:\s*(\d+(?:\.\d+)?)",
    lite_target="huawei_ascend_npu",
)

# The plugin's hooks (discovery, predictors, the npu-smi sampler, the Lite target), made from ASCEND by the
# shared helper and bound as this module's attributes, where pluggy looks for them.
globals().update(ASCEND.hookimpls())
