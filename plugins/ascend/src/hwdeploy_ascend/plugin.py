"""Huawei Ascend NPUs (``npu:N``) through Paddle Inference and PaddleCustomDevice's ``npu`` plugin.

Everything Paddle-CustomDevice-generic (discovery in a child process, the
abort-proof ``enable_custom_device``, per-op placement in the receipt, the
plugin's hooks themselves) lives in :mod:`hwdeploy_customdevice`; this module
only says what is Ascend-specific.

Nothing to convert: Paddle Inference runs the model as it is. Paddle Lite's
``huawei_ascend_npu`` NNAdapter target is the arm plugin's (hwdeploy-arm, which
runs Lite's ``opt``).
"""

from __future__ import annotations

from hwdeploy_customdevice import CustomDeviceVendor

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
)

# The plugin's hooks (discovery, predictors, the npu-smi sampler) made from ASCEND by the
# shared helper and bound as this module's attributes, where pluggy looks for them.
globals().update(ASCEND.hookimpls())
