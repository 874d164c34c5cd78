"""Paddle -> ONNX (paddle2onnx) -> OpenVINO IR, in a child process.

paddle2onnx imports Paddle and aborts the whole process (SIGABRT) on an
operator it cannot map (paddle2onnx 2.1.0, Paddle 3.3.1), and OpenVINO's own
Paddle frontend reads only legacy ``.pdmodel`` programs, not PIR ``.json``.
So both steps run in one child through :func:`hwdeploy.sdk.isolation.run_probe`.
The IR is saved in full fp32 (``compress_to_fp16=False``; OpenVINO's default
would halve the weights' precision without saying so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwdeploy.errors import ConversionError
from hwdeploy.sdk.isolation import run_probe
from hwdeploy.sdk.onnx_export import DEFAULT_OPSET, check_opset, paddle2onnx_in_child

CONVERT_TIMEOUT = 900.0


def convert_in_child(program: str, params: str, output_xml: str, opset: int) -> dict[str, Any]:
    """paddle2onnx then ``openvino.convert_model`` + ``save_model`` (runs in the child process)."""
    import os

    onnx_path = str(Path(output_xml).with_suffix(".onnx"))
    p2o_version = paddle2onnx_in_child(program, params, onnx_path, opset)
    import openvino as ov

    ov_model = ov.convert_model(onnx_path)
    ov.save_model(ov_model, output_xml, compress_to_fp16=False)
    os.remove(onnx_path)
    return {"paddle2onnx": p2o_version, "openvino": ov.get_version(), "onnx_opset": opset,
            "ov_ops": len(ov_model.get_ordered_ops())}


def convert_to_ir(model, output_dir: Path, opset: int = DEFAULT_OPSET) -> tuple[Path, dict[str, Any]]:
    """Write ``output_dir/model.xml`` + ``model.bin`` for ``model``; return (xml path, facts)."""
    check_opset(opset)
    xml = Path(output_dir) / "model.xml"
    result = run_probe(f"{__name__}:convert_in_child", [str(model.program), str(model.params or ""), str(xml), opset],
                       timeout=CONVERT_TIMEOUT)
    if result.ok and xml.exists():
        return xml, result.value
    detail = result.error or "no IR written"
    if "unsupported operators" in result.stderr_tail:
        detail += " (paddle2onnx has no ONNX mapping for some operator of this model)"
    raise ConversionError(f"could not convert {model.name or model.program} for OpenVINO: {detail}")
