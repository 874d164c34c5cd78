"""Paddle -> ONNX -> OpenVINO IR.

OpenVINO's own Paddle frontend reads only legacy ``.pdmodel`` programs, not
PIR ``.json``, so the IR is made from ONNX. The ONNX file comes from
hwdeploy's built-in conversion target ``onnx`` (``hwdeploy.convert(model,
"onnx")``): cached by content hash and shared with every other ONNX reader
(ONNX Runtime), with the same :class:`~hwdeploy.errors.UnsupportedOpsError`
for ops paddle2onnx cannot convert. ``openvino.convert_model`` runs in a child
process (:func:`hwdeploy.sdk.isolation.run_probe`); the IR is saved in full
fp32 (``compress_to_fp16=False``: OpenVINO's default would halve the weights'
precision without saying so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hwdeploy.errors import ConversionError
from hwdeploy.sdk.isolation import run_probe
from hwdeploy.sdk.onnx_export import TARGET as ONNX, onnx_options

CONVERT_TIMEOUT = 900.0


def convert_in_child(onnx_path: str, output_xml: str) -> dict[str, Any]:
    """``openvino.convert_model`` + ``save_model`` (runs in the child process)."""
    import openvino as ov

    ov_model = ov.convert_model(onnx_path)
    fixed = columns_for_vector_matmuls(ov_model)
    ov.save_model(ov_model, output_xml, compress_to_fp16=False)
    facts = {"openvino": ov.get_version(), "ov_ops": len(ov_model.get_ordered_ops())}
    if fixed:
        facts["ir_fixups"] = {"matmul with a 1-D constant as a [K, 1] column": fixed}
    return facts


def columns_for_vector_matmuls(ov_model) -> int:
    """Rewrite ``MatMul(x, c)`` with a 1-D constant ``c`` as ``Squeeze(MatMul(x, c[:, None]), -1)``; returns
    how many. Same numbers; but OpenVINO 2026.4's CPU plugin fails to compile the 1-D form when a Multiply
    follows (its MatMulMultiplyFusion folds the Multiply into ``c`` and breaks the shape check), which is what
    PicoDet's distribution-focal decoding ``(softmax(bins) @ arange(bins)) * stride`` is."""
    import openvino.opset13 as ops

    fixed = 0
    for node in ov_model.get_ordered_ops():
        if node.get_type_name() != "MatMul":
            continue
        weights = node.input_value(1).get_node()
        if weights.get_type_name() != "Constant" or len(weights.get_output_shape(0)) != 1:
            continue
        column = ops.constant(weights.get_data().reshape(-1, 1))
        transpose_a = bool(node.get_attributes().get("transpose_a", False))
        product = ops.matmul(node.input_value(0), column, transpose_a, False)
        node.output(0).replace(ops.squeeze(product, ops.constant(np.array([-1], np.int64))).output(0))
        fixed += 1
    if fixed:
        ov_model.validate_nodes_and_infer_types()
    return fixed


def convert_to_ir(model, output_dir: Path, opset: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Write ``output_dir/model.xml`` + ``model.bin`` for ``model``; return (xml path, facts)."""
    import hwdeploy

    onnx = hwdeploy.convert(model, ONNX, **onnx_options(opset))
    xml = Path(output_dir) / "model.xml"
    result = run_probe(f"{__name__}:convert_in_child", [str(onnx.path()), str(xml)], timeout=CONVERT_TIMEOUT)
    if not (result.ok and xml.exists()):
        raise ConversionError(f"OpenVINO could not convert the ONNX export of {model.name or model.program}:"
                              f" {result.error or 'no IR written'}")
    facts = {key: onnx.metadata[key] for key in ("paddle2onnx", "onnx_opset", "onnx_nodes") if key in onnx.metadata}
    facts["onnx"] = {"directory": str(onnx.directory), "cached": onnx.cached}
    return xml, {**facts, **result.value}
