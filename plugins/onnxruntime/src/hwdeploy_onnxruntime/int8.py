"""``precision="int8"`` for ONNX Runtime: post-training static quantization with calibration data.

The conversion target ``onnx-int8`` (declared by this plugin) takes the
cached fp32 export of the built-in ``onnx`` target and runs ONNX Runtime's
own quantizer on it: ``quant_pre_process`` (shape inference, graph
optimisation), then ``quantize_static`` in QDQ format with per-channel int8
weights and uint8 activations (U8S8, what the CPU's VNNI kernels run),
MinMax calibration. On an x86 CPU without VNNI the U8S8 kernels add pairs in
int16 and saturate, so weights are kept in 7 bits there (``reduce_range``;
measured on digits_cnn on an AVX2-only EPYC: top-1 0.50 with 8-bit weights,
0.997 with 7-bit, fp32 0.997). The artifact is cached by model hash + calibration data
hash + options, like every conversion::

    hwdeploy.predictor(model, "cpu", backend="onnxruntime", precision="int8", calibration=...)

``calibration=`` and its checks are the SDK's (:mod:`hwdeploy.sdk.calibration`,
shared with every quantizing plugin).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hwdeploy.errors import ConversionError
from hwdeploy.sdk import calibration
from hwdeploy.sdk.onnx_export import OPSET
from hwdeploy.sdk.hostinfo import int8_saturates
from hwdeploy.sdk.isolation import run_probe
from hwdeploy.sdk.options import Option, OptionSchema

TARGET = "onnx-int8"
REDUCE_RANGE = Option("reduce_range", bool, None, "quantize weights to 7 bits (default: on an x86 CPU without"
                      " VNNI, whose int8 kernels saturate with 8-bit weights)")
CONVERSION_OPTIONS = OptionSchema("onnx-int8 conversion", [*calibration.CONVERSION_OPTIONS, OPSET, REDUCE_RANGE])
#: ONNX op types that only a quantized graph has.
QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger")
#: Calibration rows fed to the quantizer per batch.
CALIBRATION_BATCH = 8
QUANTIZE_TIMEOUT = 900.0
PREPARED, QUANTIZED = "prepared.onnx", "model.onnx"


def is_quantized_op(op_type: str) -> bool:
    return op_type in QUANTIZED_OPS or op_type.startswith("QLinear") or op_type.startswith("QGemm")


def count_quantized(op_counts: Mapping[str, int]) -> dict[str, int]:
    """The quantized op types among ``{op_type: count}`` (an empty dict means an fp32 graph)."""
    return {op: n for op, n in sorted(op_counts.items()) if is_quantized_op(op) and n}


def onnx_op_counts(path: Path) -> Counter:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return Counter(node.op_type for node in graph.node)


# ------------------------------------------------------------------------------------------- the conversion

def quantize_in_child(fp32_onnx: str, calibration_npz: str, names: list[str], output_dir: str,
                      reduce_range: bool) -> dict[str, Any]:
    """``quant_pre_process`` + ``quantize_static`` (runs in the child process, in ``output_dir``: ONNX Runtime's
    shape inference writes ``sym_shape_infer_temp.onnx`` into the working directory when it fails)."""
    import os

    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    os.chdir(output_dir)
    with np.load(calibration_npz, allow_pickle=False) as data:
        arrays = [data[name] for name in names]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(calibration.batches(names, arrays, CALIBRATION_BATCH))

        def get_next(self):
            return next(self._batches, None)

    step = "quant_pre_process (shape inference + graph optimisation)"
    symbolic = "complete"
    try:
        try:
            quant_pre_process(fp32_onnx, PREPARED, skip_symbolic_shape=False)
        except Exception as exc:
            if "Incomplete symbolic shape inference" not in str(exc):
                raise
            # Shapes computed at run time (a resize to another tensor's size): ONNX's own shape inference only.
            symbolic = "incomplete: skipped (ONNX shape inference only)"
            quant_pre_process(fp32_onnx, PREPARED, skip_symbolic_shape=True)
        step = "quantize_static (QDQ, per-channel int8 weights, uint8 activations, MinMax calibration)"
        quantize_static(PREPARED, QUANTIZED, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range)
    except Exception as exc:
        raise RuntimeError(f"step {step}: {type(exc).__name__}: {str(exc).strip()[:500]}") from exc
    finally:
        for leftover in (PREPARED, "sym_shape_infer_temp.onnx"):
            Path(leftover).unlink(missing_ok=True)
    return {"symbolic_shape_inference": symbolic}


def quantize(model, options: dict[str, Any], output_dir: Path):
    """The ``onnx-int8`` conversion: fp32 ONNX (cached) -> quant_pre_process -> quantize_static (QDQ), in a child
    process (a crash or a stray file there is never the host's)."""
    import hwdeploy
    from hwdeploy import Artifact
    from hwdeploy.sdk.onnx_export import TARGET as ONNX, onnx_options

    settings = CONVERSION_OPTIONS.check(options)
    reduce_range = int8_saturates() if settings["reduce_range"] is None else settings["reduce_range"]
    fp32 = hwdeploy.convert(model, ONNX, **onnx_options(settings["opset"]))
    names, arrays, sha = calibration.load_checked(model, settings, "onnx-int8 conversion", fp32.path())
    output_dir = Path(output_dir)
    result = run_probe(f"{__name__}:quantize_in_child",
                       [str(fp32.path()), settings["calibration"], names, str(output_dir), reduce_range],
                       timeout=QUANTIZE_TIMEOUT)
    quantized = output_dir / QUANTIZED
    if not (result.ok and quantized.exists()):
        detail = result.error or "a step that wrote no model"
        detail = detail.split("RuntimeError: ", 1)[1] if "RuntimeError: step " in detail else detail
        raise ConversionError(f"int8 quantization of {model.name or model.program} failed at {detail}")
    leftovers = sorted(f.name for f in output_dir.iterdir() if f.name != QUANTIZED)
    for name in leftovers:  # external-data files ONNX Runtime's failed shape inference may have left
        (output_dir / name).unlink()
    ops = count_quantized(onnx_op_counts(quantized))
    if not ops:
        raise ConversionError(f"int8 quantization of {model.name or model.program}: quantize_static wrote a graph"
                              " with no quantized nodes")
    from hwdeploy_onnxruntime.predictor import ort_version

    facts = {"precision": "int8", "quantizer": f"onnxruntime.quantization {ort_version()}", "format": "QDQ",
             "per_channel": True, "activations": "uint8", "weights": "int8",
             "reduce_range": reduce_range, "calibration_method": "MinMax",
             "symbolic_shape_inference": result.value["symbolic_shape_inference"],
             "calibration_sha256": sha, "calibration_rows": int(len(arrays[0])), "quantized_ops": ops,
             "fp32_onnx": dict(fp32.metadata), "paddle2onnx": fp32.metadata.get("paddle2onnx", ""),
             "onnx_opset": fp32.metadata.get("onnx_opset", "")}
    return Artifact(TARGET, output_dir, [quantized.name], facts)
