"""Issue 12, unit level: bounded parameter scanning and typed errors for hostile files and paths.

The generated campaign is in ``test_fault_campaign.py``; these pin the cases it found, one by one.
"""

from __future__ import annotations

import json
import shutil
import struct
import time

import numpy as np
import pytest

import hwdeploy
from hwdeploy.errors import BackendError, HwdeployError, ModelError, ModelFormatError
from hwdeploy.sdk.paddle_format import scan_params


def _tensor(dims: list[int], dtype_code: int = 5, data: bytes = b"") -> bytes:
    """One save_combine tensor: version, lod level 0, tensor version, TensorDesc{1: dtype, 2: dims}, data."""
    desc = bytes([0x08, dtype_code])
    for dim in dims:
        desc += b"\x10" + _varint(dim & ((1 << 64) - 1))
    return struct.pack("<IQ", 0, 0) + struct.pack("<Ii", 0, len(desc)) + desc + data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def test_scan_params_reads_a_well_formed_stream(tmp_path):
    path = tmp_path / "ok.pdiparams"
    path.write_bytes(_tensor([2, 3], data=bytes(24)) + _tensor([0]) + _tensor([4], 3, bytes(32)))
    records = scan_params(path)
    assert [(r.dtype, r.shape, r.nbytes) for r in records] == [("float32", (2, 3), 24), ("float32", (0,), 0),
                                                               ("int64", (4,), 32)]


@pytest.mark.parametrize("dims", [[7, 2635249153387078801], [2**62, 2], [2**63 - 1], [3, 2**61, 4, 5],
                                  [1 << 32, 1 << 32], [10**6] * 8])
def test_scan_params_refuses_dims_whose_product_exceeds_the_file_fast(tmp_path, dims):
    """A wrapped-around int64 product used to loop forever (+1.5 GiB/min); [2**62, 2] raised OverflowError."""
    path = tmp_path / "bad.pdiparams"
    path.write_bytes(_tensor([2], data=bytes(8)) + _tensor(dims, data=bytes(64)))
    started = time.monotonic()
    with pytest.raises(ModelFormatError, match=r"bad\.pdiparams.*tensor #1.*need more than the whole file"):
        scan_params(path)
    assert time.monotonic() - started < 1.0


def test_scan_params_refuses_a_negative_dim(tmp_path):
    path = tmp_path / "neg.pdiparams"
    path.write_bytes(_tensor([-1, 4], data=bytes(16)))
    with pytest.raises(ModelFormatError, match="dims"):
        scan_params(path)


def test_scan_params_terminates_on_every_truncation_and_flip(tmp_path):
    """Every prefix and every single-byte flip of a small stream: a list of records or ModelFormatError, fast."""
    good = _tensor([2, 3], data=bytes(range(24))) + _tensor([4], 3, bytes(32))
    path = tmp_path / "p.pdiparams"
    rng = np.random.default_rng(0)
    variants = [good[:cut] for cut in range(1, len(good))]
    variants += [good[:i] + bytes([good[i] ^ int(rng.integers(1, 256))]) + good[i + 1:] for i in range(len(good))]
    started = time.monotonic()
    for blob in variants:
        path.write_bytes(blob)
        try:
            records = scan_params(path)
        except ModelFormatError:
            continue
        assert sum(r.nbytes for r in records) <= len(blob)
    assert time.monotonic() - started < 5.0


# ---------------------------------------------------------------- untyped exceptions out of the public API


@pytest.fixture(scope="module")
def mlp():
    from hwdeploy import zoo

    return zoo.get("mlp")


def test_a_params_path_that_is_a_directory_is_a_model_format_error(tmp_path, mlp):
    folder = tmp_path / "params"
    folder.mkdir()
    with pytest.raises(ModelFormatError, match="params: is a directory"):
        hwdeploy.load_model(mlp.model.program, folder)
    with pytest.raises(ModelFormatError, match="is a directory"):
        hwdeploy.predictor((mlp.model.program, folder), device="cpu")


@pytest.mark.parametrize("form", ["prefix", "program", "nested"])
def test_a_5000_character_path_is_a_model_error_not_an_os_error(tmp_path, form):
    long = {"prefix": "x" * 5000, "program": "x" * 5000 + ".json", "nested": str(tmp_path / ("y" * 5000) / "m")}[form]
    with pytest.raises(ModelError, match="File name too long|5[0-9]{3} characters") as info:
        hwdeploy.load_model(long)
    assert len(str(info.value)) < 600  # the message names the path, it does not repeat 5,000 characters


def test_json_nested_200k_deep_is_a_model_format_error(tmp_path, mlp):
    (tmp_path / "model.json").write_text("[" * 200_000 + "]" * 200_000)
    shutil.copy(mlp.model.params, tmp_path / "model.pdiparams")
    with pytest.raises(ModelFormatError, match="nested too deeply"):
        hwdeploy.load_model(tmp_path)


def test_a_pir_dtype_node_replaced_by_an_int_is_a_model_format_error(tmp_path, mlp):
    doc = json.loads(mlp.model.program.read_text())

    def replace(node) -> bool:
        if isinstance(node, dict):
            if node.get("#") == "0.t_dtensor":
                node["D"][0] = 5
                return True
            return any(replace(v) for v in node.values())
        return isinstance(node, list) and any(replace(v) for v in node)

    assert replace(doc)
    (tmp_path / "model.json").write_text(json.dumps(doc))
    shutil.copy(mlp.model.params, tmp_path / "model.pdiparams")
    with pytest.raises(ModelFormatError, match=r"model\.json: malformed Paddle PIR program \(AttributeError"):
        hwdeploy.load_model(tmp_path)


def test_a_failed_run_names_paddles_reason_not_in_user_code(mlp):
    predictor = hwdeploy.predictor(mlp.model, device="cpu", threads=1)
    try:
        with pytest.raises(BackendError) as info:
            predictor._run([np.ones((1, 7), "float32")])  # past hwdeploy's own shape check, into Paddle
    finally:
        predictor.close()
    message = str(info.value)
    assert "In user code" not in message
    assert "InvalidArgumentError" in message and "dimension" in message


def test_paddle_error_text_reduction_picks_the_reason():
    from hwdeploy.sdk.paddle_inference import first_line as _first_line

    text = ("In user code:\n\n\n    InvalidArgumentError: The input's second dimension is 7.\n"
            "      [Hint: Expected a == b.] (at common_shape.h:314)\n      [operator < onednn_kernel.phi_kernel > error]")
    assert _first_line(RuntimeError(text)) == "InvalidArgumentError: The input's second dimension is 7."
    assert _first_line(RuntimeError("(PreconditionNotMet) Tensor holds no memory.\n  [Hint: x]")) \
        == "(PreconditionNotMet) Tensor holds no memory."
    assert _first_line(RuntimeError("")) == "RuntimeError"


def test_output_copy_failure_is_a_backend_error(mlp):
    """The output copy sat outside the BackendError wrapper: Paddle's "Tensor holds no memory" escaped bare."""
    predictor = hwdeploy.predictor(mlp.model, device="cpu", threads=1)

    class Empty:
        def copy_to_cpu(self):
            raise RuntimeError("(PreconditionNotMet) Tensor holds no memory. Call Tensor::mutable_data firstly.")

    try:
        predictor._fetches = [Empty().copy_to_cpu]
        with pytest.raises(BackendError, match="Tensor holds no memory"):
            predictor._run([np.ones((1, 64), "float32")])
    finally:
        predictor.close()


def test_every_error_here_is_a_hwdeploy_error():
    assert issubclass(ModelFormatError, HwdeployError) and issubclass(ModelError, HwdeployError)
