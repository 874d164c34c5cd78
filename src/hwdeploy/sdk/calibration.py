"""Calibration data for post-training quantization, shared by every plugin that quantizes.

``calibration=`` is an ``.npz`` path (one array per model input, by input
name, or a single array for a one-input model), an array, or an iterable of
input dicts / arrays / lists of arrays, each a batch; zoo models that were
trained default to their calibration split (the caller passes
``hwdeploy.zoo.calibration_of(model)``), other models must pass it (hwdeploy
does not guess). The data is checked against the
model's inputs (names, dtypes, shapes, finite, not empty) before any
quantizer runs, then stored in the cache by content hash, so that a
quantized artifact is cached by model hash + calibration hash + options::

    settings = OPTIONS.check(options)                  # CALIBRATION is one of the backend's options
    data = settings["calibration"] if settings["calibration"] is not None else zoo.calibration_of(model)
    conversion = calibration.conversion_options(model, data, "mybackend backend")
    artifact = hwdeploy.convert(model, "mybackend-int8", **conversion)

and inside the conversion, :func:`load_checked` gives the arrays back (and
proves they are the data the hash names).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hwdeploy.errors import InputError, OptionError
from hwdeploy.sdk.options import Option

#: The backend option (``precision="int8"`` only).
CALIBRATION = Option("calibration", object, None, "precision='int8' only: an .npz path, an array, or an iterable of"
                     " input dicts/arrays (default: the zoo model's own calibration set)")
#: The conversion target's options: the stored data and its hash (the cache key follows the data).
CONVERSION_OPTIONS = [
    Option("calibration", str, None, "the calibration .npz (hwdeploy.predictor(..., precision='int8') writes it)"),
    Option("calibration_sha256", str, None, "sha256 of the calibration data: the cache key follows the data"),
]


def input_specs(model, onnx_path: Path | None = None) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(name, dtype, shape)`` of each model input (``-1`` = dynamic): the Paddle program's, else the ONNX graph's."""
    from hwdeploy.contract.model import model_io

    specs = model_io(model)
    if specs is None and model.format == "legacy":
        from hwdeploy.sdk.paddle_inference import program_io

        specs = program_io(model)
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


def resolve_calibration(model, calibration, specs, who: str = "int8 quantization") -> list[np.ndarray]:
    """Checked calibration data: one array ``[N, ...]`` per model input, in input order.

    ``OptionError`` when missing or empty, ``InputError`` for wrong names,
    count, dtypes, shapes or non-finite values.
    """
    if calibration is None:
        raise OptionError(
            f"{who}: precision='int8' needs calibration data for {model.name or model.program}"
            " (calibration= an .npz path, an array, or an iterable of input dicts/arrays); hwdeploy does not"
            " guess it for models outside the trained zoo")
    names = [s[0] for s in specs]
    batches = _batches(calibration, names, who)
    columns: list[list[np.ndarray]] = [[] for _ in names]
    for i, batch in enumerate(batches):
        for j, (name, dtype, shape) in enumerate(specs):
            columns[j].append(_check_array(batch[name], name, dtype, shape, f"calibration batch {i}"))
    if not batches or sum(len(a) for a in columns[0]) == 0:
        raise OptionError(f"{who}: the calibration data is empty (no input rows)")
    return [np.ascontiguousarray(np.concatenate(col)) for col in columns]


def _batches(calibration, names: list[str], who: str) -> list[dict[str, Any]]:
    if isinstance(calibration, (str, os.PathLike)):
        path = Path(calibration)
        if path.suffix != ".npz":
            raise OptionError(f"{who}: calibration path {path} is not an .npz file")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise OptionError(f"{who}: cannot read calibration file {path}: {exc}") from None
        if len(names) == 1 and len(arrays) == 1:
            return [{names[0]: next(iter(arrays.values()))}]
        return [arrays]
    if isinstance(calibration, np.ndarray):
        return [_as_dict(calibration, names, 0)]
    if isinstance(calibration, Mapping):
        return [_as_dict(calibration, names, 0)]
    if not isinstance(calibration, Iterable):
        raise OptionError(f"{who}: calibration must be an .npz path, an array or an iterable of"
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


def conversion_options(model, calibration, who: str, onnx_path: Path | None = None) -> dict[str, str]:
    """Check ``calibration`` (or the zoo default), store it; the options a quantizing conversion target takes."""
    specs = input_specs(model, onnx_path)
    arrays = resolve_calibration(model, calibration, specs, who)
    path, sha = store_calibration([s[0] for s in specs], arrays)
    return {"calibration": str(path), "calibration_sha256": sha}


def load_checked(model, settings: Mapping[str, Any], who: str,
                 onnx_path: Path | None = None) -> tuple[list[str], list[np.ndarray], str]:
    """Inside a conversion: ``(input names, arrays, sha256)`` of the calibration data its options name."""
    if settings.get("calibration") is None or settings.get("calibration_sha256") is None:
        raise OptionError(f"{who} needs calibration= (an .npz path) and calibration_sha256= (its data's hash, so"
                          " that the cache key follows the data); hwdeploy.predictor(..., precision='int8') passes"
                          " both")
    specs = input_specs(model, onnx_path)
    names = [s[0] for s in specs]
    arrays = resolve_calibration(model, settings["calibration"], specs, who)
    sha = calibration_sha256(names, arrays)
    if sha != settings["calibration_sha256"]:
        raise OptionError(f"{who}: calibration data {settings['calibration']} has sha256 {sha}, not the"
                          f" calibration_sha256 given ({settings['calibration_sha256']})")
    return names, arrays, sha


def batches(names: list[str], arrays: list[np.ndarray], size: int) -> list[dict[str, np.ndarray]]:
    """The calibration rows as input dicts of at most ``size`` rows each."""
    return [{n: a[i:i + size] for n, a in zip(names, arrays)} for i in range(0, len(arrays[0]), size)]
