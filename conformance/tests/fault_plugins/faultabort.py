"""Fault 3a: aborts the process at predictor creation.

A real Paddle abort: ``Config.enable_custom_device`` for a device type no
CustomDevice plugin registered makes ``create_predictor`` raise SIGABRT
("No allocator found for the place").
"""

from hwdeploy import hookimpl
from hwdeploy.sdk import paddle_inference as pi

import hwdeploy_test_faultkit as kit

KIND = "faultabort"


@hookimpl
def hwdeploy_discover_devices():
    return [kit.host_device(KIND, "fixture device whose runtime aborts at load")]


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if kit.check_kind(device, KIND):
        config = pi.make_config(model, threads=1)
        config.enable_custom_device("fault_unregistered_npu", 0)
        return pi.PaddleInferencePredictor(model, device, config, actual_device=lambda c: device.id)
