"""Fault 1: a "gpu" plugin that asks Paddle for the GPU with the real ``Config.enable_use_gpu``.

On the CPU-only paddlepaddle wheel Paddle logs one error line and runs on the
CPU: a real silent fallback. The plugin is honest in that it reports what
Paddle says (``config.use_gpu()``), so the receipt shows it.
"""

from hwdeploy import Device, hookimpl
from hwdeploy.sdk import paddle_inference as pi


@hookimpl
def hwdeploy_discover_devices():
    return [Device("gpu", 0, name="fixture GPU via Config.enable_use_gpu", backend="faultgpu", priority=-10)]


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if device.kind != "gpu" or device.backend != "faultgpu":
        return None
    config = pi.make_config(model, threads=1)
    config.enable_use_gpu(256, 0)
    return pi.PaddleInferencePredictor(model, device, config, options=options)
