"""The ProgramDesc patches Paddle Lite needs, and the PIR -> legacy translation.

Each patch is checked twice: what it changes (pure protobuf), and that Lite really fails without
it (opt or a run aborts with the message the patch exists for) and works with it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from hwdeploy.errors import UnsupportedOpsError
from hwdeploy.sdk.paddle_format import load_pir_program, scan_params
from hwdeploy_arm import program as prog
from hwdeploy_arm.pir_to_legacy import supported_pir_ops, translate
from hwdeploy_arm.worker import LiteWorker, LiteWorkerError

ZOO = ["mlp", "mobilenet_v2", "resnet18", "transformer_encoder", "gru_text", "unet_small"]


def _attrs(op) -> dict:
    return {a.name: a for a in op.attrs}


def test_add_default_attrs_gives_relu6_its_threshold(zoo_model):
    program = prog.load_program(zoo_model("mobilenet_v2").legacy.program)
    relu6 = [op for op in program.blocks[0].ops if op.type == "relu6"]
    assert relu6 and all("threshold" not in _attrs(op) for op in relu6)  # what Paddle 3 writes
    assert prog.add_default_attrs(program) == len(relu6)
    assert all(_attrs(op)["threshold"].f == 6.0 for op in relu6)
    assert prog.add_default_attrs(program) == 0  # idempotent


def test_add_xshape_outputs(zoo_model):
    program = prog.load_program(zoo_model("transformer_encoder").legacy.program)
    block = program.blocks[0]
    targets = [op for op in block.ops if op.type in prog.XSHAPE_OPS]
    missing = [op for op in targets if not any(o.parameter == "XShape" and o.arguments for o in op.outputs)]
    assert {op.type for op in missing} >= {"transpose2", "unsqueeze2"}  # Paddle 3 dropped them there
    assert prog.add_xshape_outputs(program) == len(missing)
    variables = {v.name: v for v in block.vars}
    for op in targets:
        outputs = {o.parameter: list(o.arguments) for o in op.outputs}
        source = next(list(i.arguments) for i in op.inputs if i.parameter == "X")[0]
        xshape = variables[outputs["XShape"][0]]
        assert list(xshape.type.dense_tensor.tensor.dims) == [0] + list(variables[source].type.dense_tensor.tensor.dims)
    assert prog.add_xshape_outputs(program) == 0


def test_gru_patches_and_parameter_filtering(zoo_model, tmp_path):
    z = zoo_model("gru_text")
    program = prog.load_program(z.legacy.program)
    before = prog.persistable_names(program)
    assert prog.scalar_fill_constants(program) >= 1  # 0-d constants feeding the initial state's shape
    assert prog.demote_empty_persistables(program) == 1  # the GRU's empty dropout state
    after = prog.persistable_names(program)
    (dropped,) = set(before) - set(after)
    prog.filter_params(z.legacy.params, before, after, tmp_path / "p.pdiparams")
    kept = scan_params(tmp_path / "p.pdiparams")
    original = dict(zip(before, scan_params(z.legacy.params)))
    assert len(kept) == len(after) and original[dropped].nbytes == 0
    assert [(r.dtype, r.shape) for r in kept] == [(original[n].dtype, original[n].shape) for n in after]


# ----------------------------------------------------------------------------- Lite really needs them

def _opt(worker, program, params, tmp_path, tag: str) -> str:
    path = tmp_path / f"{tag}.pdmodel"
    path.write_bytes(program.SerializeToString())
    return worker.request("opt", model_file=str(path), param_file=str(params), valid_targets="x86",
                          out_prefix=str(tmp_path / tag))["nb"]


def _all_but(program, skipped: str) -> None:
    for name, patch in prog.LITE_PATCHES.items():
        if name != skipped:
            patch(program)


@pytest.mark.parametrize("patch, model, failure", [
    ("add_default_attrs", "mobilenet_v2", "No attributes called threshold found for relu6"),
    ("add_xshape_outputs", "resnet18", "SIGSEGV"),
    ("demote_empty_persistables", "gru_text", "has not initialized"),
])
def test_opt_fails_without_the_patch(patch, model, failure, lite_python, zoo_model, tmp_path):
    z = zoo_model(model)
    with LiteWorker(lite_python, name="lite-opt-test") as worker:
        program = prog.load_program(z.legacy.program)
        _all_but(program, patch)
        with pytest.raises(LiteWorkerError) as info:
            _opt(worker, program, z.legacy.params, tmp_path, "without")
        assert failure in str(info.value)
        program = prog.load_program(z.legacy.program)
        before = prog.persistable_names(program)
        prog.patch_for_lite(program)
        params = z.legacy.params
        if prog.persistable_names(program) != before:
            params = tmp_path / "filtered.pdiparams"
            prog.filter_params(z.legacy.params, before, prog.persistable_names(program), params)
        assert _opt(worker, program, params, tmp_path, "with").endswith("with.nb")


def test_run_fails_without_scalar_fill_constants(lite_python, zoo_model, tmp_path):
    z = zoo_model("gru_text")
    program = prog.load_program(z.legacy.program)
    before = prog.persistable_names(program)
    _all_but(program, "scalar_fill_constants")
    params = tmp_path / "filtered.pdiparams"
    prog.filter_params(z.legacy.params, before, prog.persistable_names(program), params)
    tokens = z.sample_inputs(batch=1)
    with LiteWorker(lite_python, name="lite-opt-test") as worker:
        nb = _opt(worker, program, params, tmp_path, "without")  # opt is fine with it...
        handle = worker.request("load", nb=nb)["handle"]
        with pytest.raises(LiteWorkerError, match="no valid out_shape"):  # ...the first run is not
            worker.run(handle, tokens)
        prog.scalar_fill_constants(program)
        handle = worker.request("load", nb=_opt(worker, program, params, tmp_path, "with"))["handle"]
        (out,), _ = worker.run(handle, tokens)
        assert out.shape == (1, 32, 8) and np.isfinite(out).all()


# ----------------------------------------------------------------------------- PIR -> legacy

@pytest.mark.parametrize("name", ZOO)
def test_translation_matches_paddles_own_legacy_export(name, zoo_model):
    """Translating the PIR program gives the ops Paddle itself writes for the legacy format."""
    z = zoo_model(name)
    translated = translate(load_pir_program(z.model.program))
    mine, paddles = Counter(prog.op_types(translated)), Counter(prog.op_types(prog.load_program(z.legacy.program)))
    if name == "gru_text":  # shapes for the initial state go through int32 casts + an unused stack
        assert set(mine) >= set(paddles) and set(mine) - set(paddles) == {"stack", "cast"}
    else:
        assert mine == paddles
    inputs, outputs = prog.io_specs(translated)
    legacy_inputs, legacy_outputs = prog.io_specs(prog.load_program(z.legacy.program))
    assert [(s.name, s.shape, s.dtype) for s in inputs] == [(s.name, s.shape, s.dtype) for s in legacy_inputs]
    assert [s.dtype for s in outputs] == [s.dtype for s in legacy_outputs]
    # every saved parameter is a persistable variable: the PIR .pdiparams file is reused as is
    assert prog.persistable_names(translated) == sorted(n for n, _, _ in load_pir_program(z.model.program).parameters)


def test_untranslatable_ops_are_listed(cumprod_models):
    with pytest.raises(UnsupportedOpsError) as info:
        translate(load_pir_program(cumprod_models["pir"]))
    assert info.value.ops == ["pd_op.cumprod"]
    assert "pd_op.cumprod x1" in str(info.value)
    assert "pd_op.cumprod" not in supported_pir_ops() and "pd_op.conv2d" in supported_pir_ops()
