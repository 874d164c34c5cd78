"""Model resolution and validation: missing, truncated or corrupt files get a typed error naming the file."""

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hwdeploy
from hwdeploy import ModelFormatError, ModelNotFoundError, load_model
from hwdeploy.sdk.paddle_format import load_pir_program, read_params, scan_params


def copy_model(src, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    return dst


def test_directory_prefix_file_and_tuple_resolve_to_the_same_model(tiny_mlp):
    forms = [tiny_mlp, tiny_mlp / "model", tiny_mlp / "model.json", tiny_mlp / "model.pdiparams",
             (tiny_mlp / "model.json", tiny_mlp / "model.pdiparams"), str(tiny_mlp)]
    models = [load_model(f) for f in forms]
    assert {m.program for m in models} == {(tiny_mlp / "model.json").resolve()}
    assert {m.sha256 for m in models} == {models[0].sha256}
    assert models[0].format == "pir"


def test_missing_paths_name_what_is_missing(tmp_path, tiny_mlp):
    with pytest.raises(ModelNotFoundError, match="nope"):
        load_model(tmp_path / "nope")
    only_program = copy_model(tiny_mlp, tmp_path / "m")
    (only_program / "model.pdiparams").unlink()
    with pytest.raises(ModelNotFoundError, match=r"model\.pdiparams"):
        load_model(only_program)
    with pytest.raises(ModelNotFoundError, match="expected exactly one model"):
        load_model(tmp_path)


def test_parameter_reader_matches_paddle(tiny_mlp):
    program = load_pir_program(tiny_mlp / "model.json")
    names = sorted(name for name, _, _ in program.parameters)
    params = read_params(tiny_mlp / "model.pdiparams", names)
    assert {k: v.shape for k, v in params.items()} == {name: shape for name, _, shape in program.parameters}
    # The MLP's output through numpy equals Paddle's: the reader returns the real weights.
    x = np.random.default_rng(1).standard_normal((3, 8)).astype("float32")
    w1, b1, w2, b2 = (params[n] for n in ("linear_0.w_0", "linear_0.b_0", "linear_1.w_0", "linear_1.b_0"))
    expected = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    got = hwdeploy.predictor(tiny_mlp, device="cpu").run(x)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("damage, message", [
    (lambda p, j: p.write_bytes(p.read_bytes()[:-7]), "truncated parameter file"),
    (lambda p, j: p.write_bytes(p.read_bytes() + b"junk"), "truncated parameter file|corrupt|not a Paddle"),
    (lambda p, j: p.write_bytes(b"\x07" + p.read_bytes()[1:]), "not a Paddle parameter file"),
    (lambda p, j: p.write_bytes(b""), "file is empty"),
    (lambda p, j: j.write_text(j.read_text()[:500]), "not a valid Paddle PIR program"),
    (lambda p, j: j.write_text('{"hello": 1}'), "not a Paddle PIR program"),
    (lambda p, j: j.write_bytes(b"\xff\xfe garbage"), "not a valid Paddle PIR program"),
])
def test_damaged_files_get_a_typed_error_naming_the_file(tmp_path, tiny_mlp, damage, message):
    model_dir = copy_model(tiny_mlp, tmp_path / "damaged")
    damage(model_dir / "model.pdiparams", model_dir / "model.json")
    with pytest.raises(ModelFormatError, match=message) as info:
        hwdeploy.predictor(model_dir, device="cpu")
    assert str(info.value.path).startswith(str(model_dir))


def test_parameters_swapped_with_another_model_are_caught(tmp_path, tiny_mlp):
    import json

    model_dir = copy_model(tiny_mlp, tmp_path / "swapped")
    program = json.loads((model_dir / "model.json").read_text())
    text = json.dumps(program).replace("[8, 32]", "[8, 33]", 1)
    (model_dir / "model.json").write_text(text)
    with pytest.raises(ModelFormatError, match="parameter linear_0.w_0"):
        load_model(model_dir)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_truncation_or_byte_flip_of_the_parameters_never_aborts(tmp_path_factory, tiny_mlp, data):
    """Damage the file anywhere: either a typed error, or (when the damage hits float bytes) a model that runs."""
    model_dir = copy_model(tiny_mlp, tmp_path_factory.mktemp("fuzz"))
    params = model_dir / "model.pdiparams"
    raw = bytearray(params.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        pos = data.draw(st.integers(0, len(raw) - 1), label="position")
        raw[pos] ^= data.draw(st.integers(1, 255), label="xor")
    params.write_bytes(bytes(raw))
    try:
        p = hwdeploy.predictor(model_dir, device="cpu")
    except (ModelFormatError, hwdeploy.BackendError) as exc:
        assert str(exc)
        return
    p.run(np.ones((1, 8), "float32"))


def test_scan_params_reports_offsets_consistently(tiny_mlp):
    records = scan_params(tiny_mlp / "model.pdiparams")
    size = (tiny_mlp / "model.pdiparams").stat().st_size
    assert records[-1].offset + records[-1].nbytes == size
    assert all(r.dtype == "float32" for r in records)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_legacy_program_is_a_model_format_error_naming_it(tmp_path, damage):
    """Legacy ProgramDesc files are parsed by Paddle itself: its parse failure must still name the file."""
    import os

    from hwdeploy import zoo

    legacy = zoo.get("mlp").legacy
    assert legacy is not None
    shutil.copy(legacy.program, tmp_path / "model.pdmodel")
    shutil.copy(legacy.params, tmp_path / "model.pdiparams")
    program = tmp_path / "model.pdmodel"
    if damage == "truncate":
        os.truncate(program, program.stat().st_size // 2)
    else:
        program.write_bytes(b"\x0a" + bytes(range(256)) * 2)
    with pytest.raises(ModelFormatError, match="cannot parse the program") as info:
        hwdeploy.predictor(tmp_path, device="cpu")
    assert info.value.path == program.resolve()


# ---------------------------------------------------------------- the SDK's protobuf reader (legacy programs)


def test_varint_decodes_and_refuses_truncated_or_overlong_input():
    from hwdeploy.sdk.paddle_format import varint

    assert varint(b"\x96\x01", 0) == (150, 2)
    assert varint(b"\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 1) == ((1 << 64) - 1, 11)
    with pytest.raises(ModelFormatError, match="truncated varint at offset 2"):
        varint(b"\x96\x96", 0)  # the continuation bit promises a byte that is not there
    with pytest.raises(ModelFormatError, match="truncated varint"):
        varint(b"", 0)
    with pytest.raises(ModelFormatError, match="longer than 64 bits"):
        varint(b"\xff" * 11, 0)


def test_proto_fields_refuse_a_field_that_runs_past_the_end():
    from hwdeploy.sdk.paddle_format import proto_fields

    message = b"\x08\x96\x01" + b"\x12\x03abc" + b"\x1d\x00\x00\x80\x3f"  # varint, bytes, fixed32
    assert list(proto_fields(message)) == [(1, 0, 150), (2, 2, b"abc"), (3, 5, b"\x00\x00\x80\x3f")]
    for cut in range(1, len(message)):
        if cut in (3, 8):  # field boundaries: a shorter message, not a broken one
            continue
        with pytest.raises(ModelFormatError, match="truncated"):
            list(proto_fields(message[:cut]))
    with pytest.raises(ModelFormatError, match="wire type 3"):
        list(proto_fields(b"\x0b"))  # a group start: never written by protobuf 3


def test_legacy_program_reader_names_a_truncated_file(tmp_path):
    from hwdeploy import zoo
    from hwdeploy.sdk.paddle_format import legacy_inputs, legacy_op_types

    legacy = zoo.get("mlp").legacy
    assert legacy is not None
    assert "feed" in legacy_op_types(legacy.program) and [s.name for s in legacy_inputs(legacy.program)] == ["x"]
    broken = tmp_path / "model.pdmodel"
    broken.write_bytes(legacy.program.read_bytes()[:-3])
    with pytest.raises(ModelFormatError, match=r"model\.pdmodel.*truncated") as info:
        legacy_op_types(broken)
    assert info.value.path == broken
