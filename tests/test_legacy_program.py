"""Legacy ``.pdmodel`` programs validated with Paddle's framework.proto before Paddle sees them (issue 12)."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

import hwdeploy
from hwdeploy.errors import ModelFormatError
from hwdeploy.sdk import legacy_program

import fault_mutants as fm

ZOO = ["mlp", "mobilenet_v2", "resnet18", "transformer_encoder", "gru_text", "unet_small", "lcnet_small",
       "shufflenet_small", "ocr_recognizer"]  # the zoo models with a legacy export (the trained digits ones aside)


@pytest.fixture(scope="module")
def legacy_mlp():
    from hwdeploy import zoo

    return zoo.get("mlp").legacy


def _write(tmp_path, program: bytes, params: bytes):
    (tmp_path / "model.pdmodel").write_bytes(program)
    (tmp_path / "model.pdiparams").write_bytes(params)
    return tmp_path


def test_the_schema_is_compiled_without_importing_paddle():
    code = ("import sys; from hwdeploy.sdk import legacy_program as lp; cls = lp.program_class();"
            " print(cls.DESCRIPTOR.full_name, 'paddle' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["paddle.framework.proto.ProgramDesc", "False"]


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_legacy_export_validates(name):
    from hwdeploy import zoo

    model = zoo.get(name).legacy
    info = legacy_program.validate_legacy_program(model.program, model.params)
    assert info.feeds and info.fetches and info.parameters
    hwdeploy.load_model(model.program)  # through validate_model


@pytest.mark.parametrize("kind, message", [
    ("drop_var", r"names '.*', which no block in scope declares|persistable vars|not a declared tensor var"),
    ("undeclared_input", r"input '.*' names 'undeclared_\d+', which no block in scope declares"),
    ("undeclared_output", r"output '.*' names 'ghost_\d+'"),
    ("mutate_attr", r"attribute '.*' (is declared \w+ but|has unknown type code)"),
    ("dangling_sub_block", r"attribute 'sub_block' references (block -?\d+; the program has 1 block|its own block)"),
    ("drop_fetch", r"no fetch op"),
    ("drop_op", r"which no earlier op writes|no fetch op|no feed op|declares"),
    ("truncate_params", r"model\.pdiparams"),
])
def test_each_structural_mutant_is_a_model_format_error_naming_the_file(tmp_path, legacy_mlp, kind, message):
    program, params = legacy_mlp.program.read_bytes(), legacy_mlp.params.read_bytes()
    for seed in range(6):
        mutated, mutated_params, _ = fm.LEGACY[kind](program, params, random.Random(seed))
        directory = tmp_path / f"m{seed}"
        directory.mkdir()
        _write(directory, mutated, mutated_params)
        if kind == "drop_var":
            try:
                hwdeploy.load_model(directory)
                continue  # the dropped var was referenced by nothing (harmless)
            except ModelFormatError as exc:
                assert "model.pd" in str(exc)
                continue
        with pytest.raises(ModelFormatError, match=message) as info:
            hwdeploy.load_model(directory)
        assert "model.pd" in str(info.value)


def test_a_persistable_var_that_does_not_match_the_parameter_file_is_refused(tmp_path, legacy_mlp):
    message = legacy_program.program_class().FromString(legacy_mlp.program.read_bytes())
    var = next(v for v in message.blocks[0].vars if v.persistable and v.type.type == 7)
    var.type.dense_tensor.tensor.dims[0] += 1
    _write(tmp_path, message.SerializeToString(), legacy_mlp.params.read_bytes())
    with pytest.raises(ModelFormatError, match=rf"parameter {var.name} is float32\[.*\] in the file but"):
        hwdeploy.load_model(tmp_path)


def test_a_protobuf_parse_failure_names_the_file(tmp_path, legacy_mlp):
    _write(tmp_path, b"\x0a\xff\xff\xff\xff\x0f" + b"\x00" * 8, legacy_mlp.params.read_bytes())
    with pytest.raises(ModelFormatError, match=r"model\.pdmodel: cannot parse the program: not a valid Paddle ProgramDesc \(protobuf"):
        hwdeploy.load_model(tmp_path)


def test_mutants_that_crashed_paddle_are_refused_before_it_loads(tmp_path, legacy_mlp):
    """The crash classes of the outside campaign (dangling var, mutated attribute, dangling sub-block), run in a
    child process through hwdeploy.predictor: a typed error, not SIGSEGV."""
    program, params = legacy_mlp.program.read_bytes(), legacy_mlp.params.read_bytes()
    directories = []
    for kind in ("undeclared_input", "mutate_attr", "dangling_sub_block", "drop_op"):
        mutated, mutated_params, _ = fm.LEGACY[kind](program, params, random.Random(1))
        directory = tmp_path / kind
        directory.mkdir()
        directories.append(str(_write(directory, mutated, mutated_params)))
    code = ("import sys, hwdeploy\nfor d in sys.argv[1:]:\n"
            "    try:\n        hwdeploy.predictor(d, device='cpu', threads=1); print('LOADED', d)\n"
            "    except hwdeploy.HwdeployError as e:\n        print('TYPED', type(e).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code, *directories], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["TYPED", "ModelFormatError"] * 4
