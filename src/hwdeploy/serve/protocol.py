"""The Open Inference Protocol (KServe v2 / Triton HTTP), JSON tensors and the binary-data extension.

Pure functions over bytes and numpy arrays (no Ray, no web framework), so they are tested directly and
every malformed request becomes a :class:`ProtocolError` (an :class:`hwdeploy.InputError`, HTTP 400).

Binary-data extension: the request body is a JSON header of ``Inference-Header-Content-Length`` bytes
followed by the raw tensors, each input with ``parameters.binary_data_size`` taking its bytes in order
(little-endian, row-major). Outputs go back the same way when the request asks for it
(``parameters.binary_data`` on a requested output, or ``parameters.binary_data_output`` for all), which
is what ``tritonclient.http`` does by default.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from hwdeploy.errors import InputError

HEADER_LENGTH = "Inference-Header-Content-Length"

#: Protocol datatype -> numpy dtype. BYTES (strings) is not a tensor type any hwdeploy model takes.
DATATYPES = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
}
DTYPE_NAMES = {np.dtype(v): k for k, v in DATATYPES.items()}


class ProtocolError(InputError):
    """A request that is not valid Open Inference Protocol (or not for this model): HTTP 400."""


def datatype_of(dtype: Any) -> str:
    try:
        return DTYPE_NAMES[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise ProtocolError(f"dtype {dtype} has no Open Inference Protocol datatype") from None


@dataclass
class InferRequest:
    id: str
    inputs: dict[str, np.ndarray]
    #: Requested outputs: name -> binary? ; None = all outputs.
    outputs: dict[str, bool] | None
    binary_output: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def parse_infer_request(body: bytes, header_length: str | None, *, max_bytes: int) -> InferRequest:
    """Decode an infer request body (JSON, or JSON header + binary tensors)."""
    if len(body) > max_bytes:
        raise ProtocolError(f"request of {len(body)} bytes exceeds the limit of {max_bytes} bytes")
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} {header_length!r} is not an integer") from None
        if not 0 < length <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {length} does not fit a body of {len(body)} bytes")
        header, binary = body[:length], memoryview(body)[length:]
    else:
        header, binary = body, memoryview(b"")
    try:
        doc = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"malformed JSON in the request: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("the request must be a JSON object")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("the request needs a non-empty 'inputs' list")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(inputs):
        array, used = _decode_input(i, item, binary[offset:])
        if item["name"] in arrays:
            raise ProtocolError(f"input {item['name']!r} given twice")
        arrays[item["name"]] = array
        offset += used
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} byte(s) of binary data left over after the last input")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object")
    outputs = doc.get("outputs")
    requested = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                    for o in outputs):
            raise ProtocolError("'outputs' must be a list of objects with a 'name'")
        requested = {o["name"]: bool((o.get("parameters") or {}).get("binary_data", False)) for o in outputs}
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    return InferRequest(request_id, arrays, requested, bool(parameters.get("binary_data_output", False)), parameters)


def _decode_input(i: int, item: Any, binary: memoryview) -> tuple[np.ndarray, int]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ProtocolError(f"inputs[{i}] must be an object with a 'name'")
    name, shape, datatype = item["name"], item.get("shape"), item.get("datatype")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
    if datatype not in DATATYPES:
        raise ProtocolError(f"input {name!r}: datatype {datatype!r} is not supported; use one of {', '.join(DATATYPES)}")
    dtype = np.dtype(DATATYPES[datatype]).newbyteorder("<")
    count = math.prod(shape)
    size = (item.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if "data" in item:
            raise ProtocolError(f"input {name!r}: both 'data' and binary_data_size given")
        if not isinstance(size, int) or size < 0 or size > len(binary):
            raise ProtocolError(f"input {name!r}: binary_data_size {size!r} exceeds the {len(binary)} binary byte(s) left")
        if size != count * dtype.itemsize:
            raise ProtocolError(f"input {name!r}: binary_data_size {size} != {count} element(s) x {dtype.itemsize}"
                                f" byte(s) for shape {shape} {datatype}")
        array = np.frombuffer(binary[:size], dtype=dtype).astype(dtype.newbyteorder("="), copy=True)
        return array.reshape(shape), size
    if "data" not in item:
        raise ProtocolError(f"input {name!r}: neither 'data' nor parameters.binary_data_size given")
    try:
        array = np.asarray(item["data"], dtype=dtype.newbyteorder("="))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"input {name!r}: data is not {datatype}: {exc}") from None
    if array.size != count:
        raise ProtocolError(f"input {name!r}: {array.size} element(s) of data for shape {shape} ({count} expected)")
    return array.reshape(shape), 0


def encode_infer_response(request: InferRequest, model_name: str, output_names: Sequence[str],
                          arrays: Sequence[np.ndarray], parameters: dict[str, Any],
                          model_version: str = "1") -> tuple[bytes, dict[str, str]]:
    """The response body and headers (``Inference-Header-Content-Length`` when any output is binary)."""
    by_name = dict(zip(output_names, arrays))
    if request.outputs is None:
        wanted = [(n, request.binary_output) for n in output_names]
    else:
        unknown = [n for n in request.outputs if n not in by_name]
        if unknown:
            raise ProtocolError(f"unknown output(s) {unknown}; the model's outputs are {list(output_names)}")
        wanted = list(request.outputs.items())
    outputs, chunks = [], []
    for name, binary in wanted:
        array = np.asarray(by_name[name])
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        if binary:
            raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.ravel().tolist()
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": outputs,
                           "parameters": parameters}
    if request.id:
        doc["id"] = request.id
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return header, {"content-type": "application/json"}
    return header + b"".join(chunks), {HEADER_LENGTH: str(len(header)), "content-type": "application/octet-stream"}


def tensor_metadata(specs: Sequence[Any]) -> list[dict[str, Any]]:
    """``inputs``/``outputs`` of the model metadata response, from hwdeploy TensorSpecs."""
    out = []
    for spec in specs:
        try:
            datatype = datatype_of(spec.dtype) if spec.dtype else "FP32"
        except ProtocolError:
            datatype = str(spec.dtype).upper()
        out.append({"name": spec.name, "datatype": datatype, "shape": [int(d) for d in spec.shape]})
    return out
