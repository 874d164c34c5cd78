"""The built-in conversion target ``onnx`` and the SDK pieces behind it (paddle2onnx runs only where installed)."""

import pytest

import hwdeploy
from hwdeploy.errors import ConversionError, OptionError, UnsupportedOpsError
from hwdeploy.sdk import onnx_export
from hwdeploy.sdk.hostinfo import dist_version


def test_the_onnx_target_is_built_in_and_names_no_runtime():
    owners = [(plugin, t) for plugin, t in hwdeploy.conversion_targets() if t.name == "onnx"]
    assert [plugin for plugin, _ in owners] == ["onnx"]  # one owner: hwdeploy itself, whatever else is installed
    assert owners[0][1].device_kinds == ()  # a format, not a runtime


def test_onnx_options_leave_the_default_opset_out_of_the_cache_key():
    assert onnx_export.onnx_options() == onnx_export.onnx_options(onnx_export.DEFAULT_OPSET) == {}
    assert onnx_export.onnx_options(17) == {"opset": 17}


def test_unknown_options_and_bad_opsets_are_refused(tiny_mlp):
    with pytest.raises(OptionError, match="unknown option"):
        hwdeploy.convert(tiny_mlp, "onnx", precision="fp16")
    with pytest.raises(OptionError, match="opset"):
        hwdeploy.convert(tiny_mlp, "onnx", opset=99)


@pytest.mark.parametrize("pir, name", [
    ("pd_op.matmul", "matmul_v2"), ("pd_op.add", "elementwise_add"), ("pd_op.conv2d", "conv2d"),
    ("pd_op.batch_norm_", "batch_norm"), ("builtin.combine", "builtin_combine"), ("pd_op.det", "det"),
])
def test_pir_names_map_to_paddle2onnx_registry_names(pir, name):
    assert onnx_export.paddle2onnx_name(pir) == name


def test_the_registry_rule_names_every_refused_op_once_and_skips_plumbing():
    supported = {"matmul_v2", "elementwise_add", "relu"}
    ops = ["pd_op.data", "builtin.parameter", "pd_op.matmul", "pd_op.add", "pd_op.det", "pd_op.det", "pd_op.inverse",
           "pd_op.fetch", "pd_op.relu_"]
    assert onnx_export.unsupported(ops, supported) == ["pd_op.det", "pd_op.inverse", "pd_op.relu_"]


def test_the_op_paddle2onnx_failed_on_is_read_from_its_log():
    log = ("[Paddle2ONNX] Start export pd_op.conv2d, op_id: 7\n[Paddle2ONNX] Finish export pd_op.conv2d, op_id: 7\n"
           "[Paddle2ONNX] Start export pd_op.nearest_interp, op_id: 11\n"
           "2026-12-01 21:33:17 [ERROR]\tFailed to convert PaddlePaddle model: (Unimplemented) the 0th elementwise\n")
    assert onnx_export.failing_op(log) == "pd_op.nearest_interp"
    assert onnx_export.failing_op(log.replace("Start export pd_op.nearest_interp", "Start nothing")) == ""
    assert onnx_export._error_lines(log) == ["Failed to convert PaddlePaddle model: (Unimplemented) the 0th elementwise"]
    assert onnx_export._listed("[Paddle2ONNX] There are some ops not supported yet, including det,inverse,\n") == [
        "det", "inverse"]


@pytest.mark.skipif(not dist_version("paddle2onnx"), reason="paddle2onnx is not installed (pip install 'hwdeploy[onnx]')")
def test_export_is_cached_and_an_unmapped_op_is_a_typed_error(tiny_mlp, model_builder, tmp_path):
    from hwdeploy.sdk import testing

    first = hwdeploy.convert(tiny_mlp, "onnx", refresh=True)
    assert not first.cached and first.path().name == "model.onnx" and first.metadata["onnx_nodes"] > 0
    assert first.metadata["plugin"] == "onnx" and first.metadata["paddle2onnx"] == dist_version("paddle2onnx")
    assert hwdeploy.convert(tiny_mlp, "onnx").cached
    model_builder(testing.ONNX_UNMAPPED, tmp_path / "unmapped" / "model")
    with pytest.raises(UnsupportedOpsError) as info:
        hwdeploy.convert(tmp_path / "unmapped", "onnx")
    assert info.value.ops == testing.ONNX_UNMAPPED_OPS


@pytest.mark.skipif(bool(dist_version("paddle2onnx")), reason="paddle2onnx is installed here")
def test_without_paddle2onnx_the_error_says_what_to_install(tiny_mlp):
    with pytest.raises(ConversionError, match="pip install paddle2onnx"):
        hwdeploy.convert(tiny_mlp, "onnx")

