"""hwdeploy: run PaddlePaddle inference models on whatever accelerator a machine has.

    import hwdeploy
    p = hwdeploy.predictor("zoo:mobilenet_v2", device="auto")
    outputs = p.run(image)
    print(p.device, p.receipt().to_json())

Importing hwdeploy does not import Paddle. The user API is here; the plugin contract is
:mod:`hwdeploy.contract`, the plugin-author SDK :mod:`hwdeploy.sdk` (see docs/plugin-authors.md).
"""

from hwdeploy.api import convert, conversion_targets, devices, disable_plugins, option_schemas, predictor
from hwdeploy.contract.hookspecs import hookimpl
from hwdeploy.contract.model import MODEL_SCHEMES, Model, TensorSpec, load_model
from hwdeploy.contract.predictor import Predictor
from hwdeploy.contract.receipt import OpPlacement, Receipt
from hwdeploy.contract.records import Artifact, CliCommand, ConversionTarget, Device, DeviceSpec
from hwdeploy.errors import (BackendError, ConcurrentUseError, ConversionError, DeviceNotFoundError, DeviceStringError,
                             FallbackError, HwdeployError, InputError, ModelError, ModelFormatError, ModelNotFoundError,
                             OptionError, PluginError, UnsupportedOpsError)


def _zoo_model(name: str) -> Model:
    from hwdeploy import zoo

    return zoo.get(name).model


MODEL_SCHEMES["zoo"] = _zoo_model  # "zoo:mobilenet_v2"; the zoo is imported (and built) only when used

__all__ = [
    "Artifact", "BackendError", "CliCommand", "ConcurrentUseError", "ConversionError", "ConversionTarget", "Device",
    "DeviceNotFoundError", "DeviceSpec", "DeviceStringError", "FallbackError", "HwdeployError", "InputError", "Model",
    "ModelError", "ModelFormatError", "ModelNotFoundError", "OpPlacement", "OptionError", "PluginError", "Predictor",
    "Receipt", "TensorSpec", "UnsupportedOpsError", "convert", "conversion_targets", "devices", "disable_plugins",
    "hookimpl", "load_model", "option_schemas", "predictor",
]
