"""The built-in conversion target ``onnx``: a Paddle model as an ONNX file, exported by paddle2onnx.

A format, not a runtime: it runs nothing and registers no device. Any plugin
whose runtime reads ONNX gets the file from here, cached by model content hash
and opset, so every such runtime shares one export of a model::

    artifact = hwdeploy.convert(model, "onnx")            # or opset=17
    artifact.path()                                       # .../model.onnx
    artifact.metadata  # {"paddle2onnx": "2.1.0", "onnx_opset": 13, "onnx_nodes": 65, ...}

A model with ops paddle2onnx cannot convert raises
:class:`~hwdeploy.errors.UnsupportedOpsError` naming them (see
:mod:`hwdeploy.sdk.onnx_export`). Needs ``paddle2onnx`` (``pip install 'hwdeploy[onnx]'``);
importing this module imports neither it nor Paddle.
"""

from __future__ import annotations

from typing import Any

from hwdeploy.contract.hookspecs import hookimpl
from hwdeploy.contract.records import Artifact, ConversionTarget
from hwdeploy.errors import ConversionError
from hwdeploy.sdk import onnx_export
from hwdeploy.sdk.options import OptionSchema

TARGET = onnx_export.TARGET
OPTIONS = OptionSchema("onnx conversion", [onnx_export.OPSET])


@hookimpl
def hwdeploy_option_schemas() -> list[OptionSchema]:
    return [OPTIONS]


@hookimpl
def hwdeploy_conversion_targets() -> list[ConversionTarget]:
    return [ConversionTarget(TARGET, "ONNX model exported by paddle2onnx, shared by every runtime that reads ONNX")]


@hookimpl
def hwdeploy_convert_model(model, target: str, options: dict[str, Any], output_dir) -> Artifact | None:
    if target != TARGET:
        return None
    opset = OPTIONS.check(options)["opset"]  # the caller's mistake first, whatever is installed
    missing = onnx_export.converter_missing("to ONNX")
    if missing:
        raise ConversionError(f"cannot convert {model.name or model.program} to ONNX: {missing}")
    path, facts = onnx_export.export_onnx(model, output_dir, opset)
    return Artifact(TARGET, output_dir, [path.name], facts)
