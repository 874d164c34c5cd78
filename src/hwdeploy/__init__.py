"""hwdeploy: run PaddlePaddle inference models on whatever accelerator a machine has.

    import hwdeploy
    p = hwdeploy.predictor("zoo:mobilenet_v2", device="auto")
    outputs = p.run(image)
    print(p.device, p.receipt().to_json())

Importing hwdeploy does not import Paddle.
"""

from hwdeploy.api import convert, conversion_targets, devices, predictor
from hwdeploy.devices import Device, DeviceSpec
from hwdeploy.errors import (BackendError, ConversionError, DeviceNotFoundError, DeviceStringError, FallbackError,
                             HwdeployError, InputError, ModelError, ModelFormatError, ModelNotFoundError, OptionError, PluginError,
                             UnsupportedOpsError)
from hwdeploy.hookspecs import hookimpl
from hwdeploy.model import Model, TensorSpec, load_model
from hwdeploy.predictor import Predictor
from hwdeploy.receipt import OpPlacement, Receipt
from hwdeploy.types import Artifact, CliCommand, ConversionTarget

__all__ = [
    "Artifact", "BackendError", "CliCommand", "ConversionError", "ConversionTarget", "Device", "DeviceNotFoundError",
    "DeviceSpec", "DeviceStringError", "FallbackError", "HwdeployError", "InputError", "Model", "ModelError",
    "ModelFormatError", "ModelNotFoundError", "OptionError", "OpPlacement", "PluginError", "Predictor", "Receipt", "TensorSpec",
    "UnsupportedOpsError", "convert", "conversion_targets", "devices", "hookimpl", "load_model", "predictor",
]
