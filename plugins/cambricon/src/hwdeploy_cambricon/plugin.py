"""Cambricon MLUs (``mlu:N``) through Paddle Inference and PaddleCustomDevice's ``mlu`` plugin.

Everything Paddle-CustomDevice-generic (discovery in a child process, the
abort-proof ``enable_custom_device``, per-op placement in the receipt, the
plugin's hooks themselves) lives in :mod:`hwdeploy_customdevice`; this module
only says what is Cambricon-specific.

Nothing to convert: Paddle Inference runs the model as it is. Paddle Lite's
``cambricon_mlu`` NNAdapter target is the arm plugin's (hwdeploy-arm, which runs
Lite's ``opt``).
"""

from __future__ import annotations

from hwdeploy_customdevice import CustomDeviceVendor

CAMBRICON = CustomDeviceVendor(
    kind="mlu",  # also Paddle's device type, registered by PaddleCustomDevice's MLU plugin
    vendor="Cambricon",
    visible_env="MLU_VISIBLE_DEVICES",  # the Cambricon runtime: which MLUs this process sees
    install_hint=("Install the Cambricon driver and Neuware SDK (CNToolkit, CNNL), then PaddleCustomDevice's MLU"
                  " plugin (the paddle-custom-mlu wheel matching your paddlepaddle, or build"
                  " PaddleCustomDevice/backends/mlu)"),
    # `cnmon info` is reported by discovery; the sampler reads the average MLU utilisation of one card.
    smi="cnmon",
    smi_usage_args=("info", "-u", "-c", "{card}"),
    smi_usage_pattern=r"MLU Average\s*:\s*(\d+(?:\.\d+)?)\s*%",
)

# The plugin's hooks (discovery, predictors, the cnmon sampler) made from CAMBRICON by the
# shared helper and bound as this module's attributes, where pluggy looks for them.
globals().update(CAMBRICON.hookimpls())
