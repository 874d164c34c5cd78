"""hwdeploy: run PaddlePaddle inference models on whatever accelerator a machine has.

    import hwdeploy
    p = hwdeploy.predictor("zoo:mobilenet_v2", device="auto")
    outputs = p.run(image)
    print(p.device, p.receipt().to_json())

Importing hwdeploy does not import Paddle.
"""

from hwdeploy.api import convert, conversion_targets, devices, predictor
from hwdeploy.contract.records import Device, DeviceSpec
from hwdeploy.errors import (BackendError, ConversionError, DeviceNotFoundError, DeviceStringError, FallbackError,
                             HwdeployError, InputError, ModelError, ModelFormatError, ModelNotFoundError, OptionError, PluginError,
                             UnsupportedOpsError)
from hwdeploy.contract.hookspecs import hookimpl
from hwdeploy.contract.model import MODEL_SCHEMES, Model, TensorSpec, load_model
from hwdeploy.contract.predictor import Predictor
from hwdeploy.contract.receipt import OpPlacement, Receipt
from hwdeploy.contract.records import Artifact, CliCommand, ConversionTarget


def _zoo_model(name: str) -> Model:
    from hwdeploy import zoo

    return zoo.get(name).model


MODEL_SCHEMES["zoo"] = _zoo_model  # "zoo:mobilenet_v2"; the zoo is imported (and built) only when used

__all__ = [
    "Artifact", "BackendError", "CliCommand", "ConversionError", "ConversionTarget", "Device", "DeviceNotFoundError",
    "DeviceSpec", "DeviceStringError", "FallbackError", "HwdeployError", "InputError", "Model", "ModelError",
    "ModelFormatError", "ModelNotFoundError", "OptionError", "OpPlacement", "PluginError", "Predictor", "Receipt", "TensorSpec",
    "UnsupportedOpsError", "convert", "conversion_targets", "devices", "hookimpl", "load_model", "predictor",
]
