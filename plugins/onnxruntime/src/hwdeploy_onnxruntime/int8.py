"""``precision="int8"`` for ONNX Runtime: post-training static quantization with calibration data.

The conversion target ``onnx-int8`` (declared by this plugin) takes the
cached fp32 export of the built-in ``onnx`` target and runs ONNX Runtime's
own quantizer on it: ``quant_pre_process`` (shape inference, graph
optimisation), then ``quantize_static`` in QDQ format with per-channel int8
weights and uint8 activations (U8S8, what the CPU's VNNI kernels run),
MinMax calibration. The artifact is cached by model hash + calibration data
hash + options, like every conversion::

    hwdeploy.predictor(model, "cpu", backend="onnxruntime", precision="int8", calibration=...)

``calibration=`` is an ``.npz`` path (one array per model input, by input
name, or a single array for a one-input model), an array, or an iterable of
input dicts / arrays / lists of arrays, each a batch; zoo models that were
trained (``zoo.TRAINED``) default to their calibration split, other models
must pass it. Calibration data is checked against the model's inputs
(names, dtypes, shapes, finite, not empty) before any quantizer runs.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hwdeploy.errors import ConversionError, InputError, OptionError
from hwdeploy.sdk.onnx_export import OPSET
from hwdeploy.sdk.options import Option, OptionSchema

TARGET = "onnx-int8"
CONVERSION_OPTIONS = OptionSchema("onnx-int8 conversion", [
    Option("calibration", str, None, "the calibration .npz (hwdeploy.predictor(..., precision='int8') writes it)"),
    Option("calibration_sha256", str, None, "sha256 of the calibration data: the cache key follows the data"),
    OPSET,
])
#: ONNX op types that only a quantized graph has.
QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger")
#: Calibration rows fed to the quantizer per batch.
CALIBRATION_BATCH = 8


def is_quantized_op(op_type: str) -> bool:
    return op_type in QUANTIZED_OPS or op_type.startswith("QLinear") or op_type.startswith("QGemm")


def count_quantized(op_counts: Mapping[str, int]) -> dict[str, int]:
    """The quantized op types among ``{op_type: count}`` (an empty dict means an fp32 graph)."""
    return {op: n for op, n in sorted(op_counts.items()) if is_quantized_op(op) and n}


def onnx_op_counts(path: Path) -> Counter:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return Counter(node.op_type for node in graph.node)


# ------------------------------------------------------------------------------------------- calibration data

def input_specs(model, onnx_path: Path | None = None) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(name, dtype, shape)`` of each model input (``-1`` = dynamic): the Paddle program's, else the ONNX graph's."""
    from hwdeploy.contract.model import model_io

    specs = model_io(model)
    if specs is not None:
        return [(s.name, s.dtype, tuple(int(d) for d in s.shape)) for s in specs[0]]
    if onnx_path is None:
        raise OptionError(f"{model.name}: cannot read the model's inputs to check calibration data")
    import onnx
    from onnx import helper

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    out = []
    for value in graph.input:
        if value.name in initializers:
            continue
        t = value.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name
        out.append((value.name, dtype, tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)))
    return out


def default_calibration(model):
    """The calibration split of a trained zoo model, or None."""
    name = model.metadata.get("zoo")
    if not name:
        return None
    from hwdeploy import zoo

    if name not in zoo.TRAINED:
        return None
    return zoo.get(name).calibration_split()


def resolve_calibration(model, calibration, specs) -> list[np.ndarray]:
    """Checked calibration data: one array ``[N, ...]`` per model input, in input order.

    ``OptionError`` when missing or empty, ``InputError`` for wrong names,
    count, dtypes, shapes or non-finite values.
    """
    if calibration is None:
        calibration = default_calibration(model)
        if calibration is None:
            raise OptionError(
                f"onnxruntime backend: precision='int8' needs calibration data for {model.name or model.program}"
                " (calibration= an .npz path, an array, or an iterable of input dicts/arrays); hwdeploy does not"
                " guess it for models outside the trained zoo")
    names = [s[0] for s in specs]
    batches = _batches(calibration, names)
    columns: list[list[np.ndarray]] = [[] for _ in names]
    for i, batch in enumerate(batches):
        for j, (name, dtype, shape) in enumerate(specs):
            columns[j].append(_check_array(batch[name], name, dtype, shape, f"calibration batch {i}"))
    if not batches or sum(len(a) for a in columns[0]) == 0:
        raise OptionError("onnxruntime backend: the calibration data is empty (no input rows)")
    return [np.ascontiguousarray(np.concatenate(col)) for col in columns]


def _batches(calibration, names: list[str]) -> list[dict[str, Any]]:
    if isinstance(calibration, (str, os.PathLike)):
        path = Path(calibration)
        if path.suffix != ".npz":
            raise OptionError(f"onnxruntime backend: calibration path {path} is not an .npz file")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise OptionError(f"onnxruntime backend: cannot read calibration file {path}: {exc}") from None
        if len(names) == 1 and len(arrays) == 1:
            return [{names[0]: next(iter(arrays.values()))}]
        return [arrays]
    if isinstance(calibration, np.ndarray):
        return [_as_dict(calibration, names, 0)]
    if isinstance(calibration, Mapping):
        return [_as_dict(calibration, names, 0)]
    if not isinstance(calibration, Iterable):
        raise OptionError(f"onnxruntime backend: calibration must be an .npz path, an array or an iterable of"
                          f" input dicts/arrays, not {type(calibration).__name__}")
    return [_as_dict(item, names, i) for i, item in enumerate(calibration)]


def _as_dict(item, names: list[str], index: int) -> dict[str, Any]:
    if isinstance(item, Mapping):
        missing, extra = set(names) - set(item), set(item) - set(names)
        if missing or extra:
            raise InputError(f"calibration batch {index}: inputs {sorted(item)} do not match the model's {names}")
        return dict(item)
    if isinstance(item, (list, tuple)) and not (len(names) == 1 and item and np.isscalar(item[0])):
        if len(item) != len(names):
            raise InputError(f"calibration batch {index}: {len(item)} arrays for the model's {len(names)} inputs"
                             f" {names}")
        return dict(zip(names, item))
    if len(names) != 1:
        raise InputError(f"calibration batch {index}: one array for a model with {len(names)} inputs {names}")
    return {names[0]: item}


def _check_array(value, name: str, dtype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise InputError(f"{where}: input {name!r} is a {type(value).__name__}, not a numpy array")
    if dtype and value.dtype != np.dtype(dtype):
        raise InputError(f"{where}: input {name!r} has dtype {value.dtype}, the model wants {dtype}")
    if value.ndim != len(shape) or any(d not in (-1, v) for d, v in zip(shape[1:], value.shape[1:])):
        raise InputError(f"{where}: input {name!r} has shape {list(value.shape)}, the model wants {list(shape)}"
                         " (-1 = any; the first dimension is the batch)")
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        raise InputError(f"{where}: input {name!r} has NaN or Inf values")
    return value


def calibration_sha256(names: list[str], arrays: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name, array in zip(names, arrays):
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def store_calibration(names: list[str], arrays: list[np.ndarray]) -> tuple[Path, str]:
    """Write checked calibration data to the cache as ``calibration/<sha256>.npz``; ``(path, sha256)``."""
    from hwdeploy.sdk.cache import cache_dir

    sha = calibration_sha256(names, arrays)
    path = cache_dir("calibration") / f"{sha}.npz"
    if not path.exists():
        tmp = path.with_name(f".{sha}.{os.getpid()}.npz")
        np.savez(tmp, **dict(zip(names, arrays)))
        os.replace(tmp, path)
    return path, sha


# ------------------------------------------------------------------------------------------- the conversion

def quantize(model, options: dict[str, Any], output_dir: Path):
    """The ``onnx-int8`` conversion: fp32 ONNX (cached) -> quant_pre_process -> quantize_static (QDQ)."""
    import hwdeploy
    from hwdeploy import Artifact
    from hwdeploy.sdk.onnx_export import TARGET as ONNX, onnx_options

    settings = CONVERSION_OPTIONS.check(options)
    if settings["calibration"] is None or settings["calibration_sha256"] is None:
        raise OptionError("onnx-int8 conversion needs calibration= (an .npz path) and calibration_sha256= (its"
                          " data's hash, so that the cache key follows the data); hwdeploy.predictor("
                          "..., precision='int8') passes both")
    fp32 = hwdeploy.convert(model, ONNX, **onnx_options(settings["opset"]))
    specs = input_specs(model, fp32.path())
    names = [s[0] for s in specs]
    arrays = resolve_calibration(model, settings["calibration"], specs)
    sha = calibration_sha256(names, arrays)
    if sha != settings["calibration_sha256"]:
        raise OptionError(f"onnx-int8 conversion: calibration data {settings['calibration']} has sha256 {sha},"
                          f" not the calibration_sha256 given ({settings['calibration_sha256']})")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            rows = len(arrays[0])
            self._batches = iter([{n: a[i:i + CALIBRATION_BATCH] for n, a in zip(names, arrays)}
                                  for i in range(0, rows, CALIBRATION_BATCH)])

        def get_next(self):
            return next(self._batches, None)

    output_dir = Path(output_dir)
    prepared = output_dir / "prepared.onnx"
    quantized = output_dir / "model.onnx"
    step = "quant_pre_process (shape inference + graph optimisation)"
    try:
        quant_pre_process(str(fp32.path()), str(prepared), skip_symbolic_shape=False)
        step = "quantize_static (QDQ, per-channel int8 weights, uint8 activations, MinMax calibration)"
        quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    except Exception as exc:
        raise ConversionError(f"int8 quantization of {model.name or model.program} failed at step {step}:"
                              f" {type(exc).__name__}: {str(exc).strip()[:500]}") from exc
    finally:
        prepared.unlink(missing_ok=True)
    ops = count_quantized(onnx_op_counts(quantized))
    if not ops:
        raise ConversionError(f"int8 quantization of {model.name or model.program}: quantize_static wrote a graph"
                              " with no quantized nodes")
    from hwdeploy_onnxruntime.predictor import ort_version

    facts = {"precision": "int8", "quantizer": f"onnxruntime.quantization {ort_version()}", "format": "QDQ",
             "per_channel": True, "activations": "uint8", "weights": "int8", "calibration_method": "MinMax",
             "calibration_sha256": sha, "calibration_rows": int(len(arrays[0])), "quantized_ops": ops,
             "fp32_onnx": dict(fp32.metadata), "paddle2onnx": fp32.metadata.get("paddle2onnx", ""),
             "onnx_opset": fp32.metadata.get("onnx_opset", "")}
    return Artifact(TARGET, output_dir, [quantized.name], facts)
