"""Cambricon MLUs (``mlu:N``) through Paddle Inference and PaddleCustomDevice's ``mlu`` plugin.

Everything Paddle-CustomDevice-generic (discovery in a child process, the
abort-proof ``enable_custom_device``, per-op placement in the receipt, the
plugin's hooks themselves) lives in :mod:`hwdeploy.custom_device`; this module
only says what is Cambricon-specific.

Paddle Lite's ``cambricon_mlu`` NNAdapter target is converted by the arm plugin
(hwdeploy-arm, which runs Lite's ``opt``); without it, this plugin declares the
target and refuses it with an error saying what to install.
"""

from __future__ import annotations

from hwdeploy.custom_device import CustomDeviceVendor

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
    lite_target="cambricon_mlu",
)

# The plugin's hooks (discovery, predictors, the cnmon sampler, the Lite target), made from CAMBRICON by the
# shared helper and bound as this module's attributes, where pluggy looks for them.
globals().update(CAMBRICON.hookimpls())
