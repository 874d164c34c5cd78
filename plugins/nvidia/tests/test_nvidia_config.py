"""Config building against the real ``paddle.inference.Config``, for every option combination.

What is asserted is what the Config *reports back* (its getters), plus the
exact arguments each Config method received. Where Paddle refuses a call
(TensorRT on a wheel built without it), the refusal itself is asserted, and
everything Paddle does accept is still checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hwdeploy
from hwdeploy.contract.records import Device
from hwdeploy.errors import BackendError, ModelFormatError, OptionError
from hwdeploy.contract.model import load_model
from hwdeploy.sdk import testing
from hwdeploy.sdk.paddle_format import legacy_inputs, legacy_op_types
from hwdeploy_nvidia import engines
from hwdeploy_nvidia.config import GETTERS, build_config, supports_cuda_graph_arg
from hwdeploy_nvidia.discovery import BACKEND
from hwdeploy_nvidia.options import GpuOptions, parse_options, parse_shapes, static_shape_ranges
from hwdeploy_nvidia.programs import engine_files, op_counts, trt_summary

PRECISION_ENUM = {"fp32": "Float32", "fp16": "Half", "int8": "Int8"}


@pytest.fixture(scope="module")
def inference():
    from hwdeploy.sdk.paddle_inference import inference_module

    return inference_module()


@pytest.fixture(scope="module")
def has_trt(inference) -> bool:
    return any(inference.get_trt_compile_version())


@pytest.fixture(scope="module")
def cuda_build() -> bool:
    import paddle

    return bool(paddle.is_compiled_with_cuda())


def _calls(report) -> dict:
    return {method: args for method, args in report.calls}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(precision=st.sampled_from(["fp32", "fp16", "int8"]),
       shape_mode=st.sampled_from(["static", "explicit", "tuned"]),
       engine_cache=st.booleans(), cuda_graph=st.booleans(),
       fmt=st.sampled_from(["pir", "legacy"]),
       min_subgraph_size=st.integers(1, 40), workspace_mb=st.integers(1, 4096), max_batch_size=st.integers(1, 64),
       optimization_level=st.one_of(st.none(), st.integers(0, 5)),
       disable_ops=st.sampled_from([(), ("relu",), ("matmul_v2", "elementwise_add")]))
def test_tensorrt_config_for_every_combination(tiny_models, tmp_path, inference, has_trt, cuda_build, precision,
                                               shape_mode, engine_cache, cuda_graph, fmt, min_subgraph_size,
                                               workspace_mb, max_batch_size, optimization_level, disable_ops):
    model = load_model(tiny_models[fmt])
    opts = GpuOptions(precision=precision, engine_cache=engine_cache, cuda_graph=cuda_graph,
                      min_subgraph_size=min_subgraph_size, workspace_size=workspace_mb << 20,
                      max_batch_size=max_batch_size, optimization_level=optimization_level, disable_ops=disable_ops)
    shape_file = tmp_path / "shape_range_info.pbtxt" if shape_mode == "tuned" else None
    ranges = {"x": ((1, 8), (max_batch_size, 8), (2 * max_batch_size, 8))} if shape_mode == "explicit" else None
    calibrate = precision == "int8"
    optim_dir = tmp_path / "optim" if engine_cache else None
    config, report = build_config(model, opts, 0, tensorrt=True, optim_dir=optim_dir, shape_file=shape_file,
                                  shape_ranges=ranges, calibrate=calibrate)
    got, calls = report.reported, _calls(report)
    assert set(got) <= set(GETTERS) and "use_gpu" in got and "tensorrt_engine_enabled" in got

    # The GPU request: exact arguments, and what Paddle made of it.
    assert calls["enable_use_gpu"] == {"arg0": 256, "arg1": 0, "arg2": "Float32"}  # TensorRT owns the precision
    assert got["use_gpu"] is cuda_build
    if not cuda_build:
        assert any("config.use_gpu() == False after enable_use_gpu(256, 0, Float32)" in f for f in report.fallback)

    # TensorRT: every argument as passed, then Paddle's answer.
    trt_args = calls["enable_tensorrt_engine"]
    assert trt_args["precision_mode"] == PRECISION_ENUM[precision]
    assert trt_args["workspace_size"] == workspace_mb << 20 and trt_args["max_batch_size"] == max_batch_size
    assert trt_args["min_subgraph_size"] == min_subgraph_size
    assert trt_args["use_static"] is engine_cache and trt_args["use_calib_mode"] is calibrate
    assert trt_args.get("use_cuda_graph", False) is (cuda_graph and supports_cuda_graph_arg())
    if has_trt and cuda_build:
        assert "enable_tensorrt_engine" not in report.refused
        assert got["tensorrt_engine_enabled"] is True
        assert str(got["tensorrt_precision_mode"]).split(".")[-1] == PRECISION_ENUM[precision]
    else:
        assert "please compile with TENSORRT first" in report.refused["enable_tensorrt_engine"]
        assert got["tensorrt_engine_enabled"] is False and str(got["tensorrt_precision_mode"]).endswith("Float32")

    # Dynamic shapes, as the Config reports them.
    if shape_mode == "tuned":
        assert got["tuned_tensorrt_dynamic_shape"] is True and got["trt_allow_build_at_runtime"] is True
        assert got["shape_range_info_path"] == str(shape_file) and report.shape_range_file == str(shape_file)
        assert "set_trt_dynamic_shape_info" not in calls
    elif shape_mode == "explicit":
        assert got["tensorrt_dynamic_shape_enabled"] is True and got["tuned_tensorrt_dynamic_shape"] is False
        # Paddle's argument order is (min, max, opt): a swap here would build wrong profiles.
        assert calls["set_trt_dynamic_shape_info"] == {"arg0": {"x": [1, 8]}, "arg1": {"x": [2 * max_batch_size, 8]},
                                                       "arg2": {"x": [max_batch_size, 8]}}
    else:
        assert got["tensorrt_dynamic_shape_enabled"] is False and got["tuned_tensorrt_dynamic_shape"] is False
    if optimization_level is not None:
        assert got["tensorrt_optimization_level"] == optimization_level
    assert ("exp_disable_tensorrt_ops" in calls) is bool(disable_ops)
    if disable_ops:
        assert calls["exp_disable_tensorrt_ops"] == {"arg0": list(disable_ops)}

    # The engine cache: the optim dir Paddle serializes engines into.
    assert report.optim_cache_dir == (str(optim_dir) if engine_cache else None)
    assert ("set_optim_cache_dir" in calls) is engine_cache
    # Only TensorRT (and nothing else) may be refused.
    assert set(report.refused) <= {"enable_tensorrt_engine"}
    json.dumps(report.to_dict())  # the report goes into receipts: it must serialise


@pytest.mark.parametrize("precision, expected", [("fp32", "Float32"), ("fp16", "Half")])
def test_native_gpu_config_uses_paddles_mixed_precision(tiny_models, precision, expected, cuda_build):
    model = load_model(tiny_models["pir"])
    config, report = build_config(model, GpuOptions(precision=precision, memory_pool_mb=512), 3, tensorrt=False)
    assert _calls(report)["enable_use_gpu"] == {"arg0": 512, "arg1": 3, "arg2": expected}
    assert "enable_tensorrt_engine" not in _calls(report) and not report.refused
    assert report.reported["tensorrt_engine_enabled"] is False
    if cuda_build:
        assert report.reported["use_gpu"] and report.reported["gpu_device_id"] == 3
        assert report.reported["memory_pool_init_size_mb"] == 512
    else:  # the verified silent fallback: the request is dropped, the Config stays on the CPU
        assert report.reported["use_gpu"] is False and report.reported["memory_pool_init_size_mb"] != 512
        assert report.fallback == [f"config.use_gpu() == False after enable_use_gpu(512, 3, {expected}): Paddle"
                                   f" runs this model on the CPU (this Paddle build cannot use CUDA)"]


def test_a_config_method_this_paddle_lacks_is_a_clear_refusal(tiny_models, inference):
    from hwdeploy_nvidia.config import ConfigReport

    report = ConfigReport()
    config = inference.Config(str(tiny_models["pir"]), str(tiny_models["pir"].with_suffix(".pdiparams")))
    assert report.call(config, "enable_tensorrt_llm_mode", True) is False
    from hwdeploy.sdk.paddle_inference import paddle_version

    assert report.refused == {"enable_tensorrt_llm_mode": f"paddle {paddle_version()} has no"
                                                          f" paddle.inference.Config.enable_tensorrt_llm_mode()"}
    assert report.call(config, "set_tensorrt_optimization_level", 2) and config.tensorrt_optimization_level() == 2


def test_collect_stage_turns_shape_collection_on_and_tensorrt_off(tiny_models, tmp_path):
    shape_file = tmp_path / "ranges.pbtxt"
    config, report = build_config(load_model(tiny_models["legacy"]), GpuOptions(precision="fp16"), 0, tensorrt=True,
                                  stage="collect", shape_file=shape_file)
    assert report.reported["shape_range_info_collected"] is True
    assert report.reported["shape_range_info_path"] == str(shape_file)
    assert "enable_tensorrt_engine" not in _calls(report) and report.reported["tensorrt_engine_enabled"] is False
    assert _calls(report)["enable_use_gpu"]["arg2"] == "Float32"  # collection runs at full precision


def test_the_optim_cache_dir_is_where_paddle_really_writes(tiny_models, fresh_cache, nvidia_gpu, cpu_only_paddle):
    """Paddle has no getter for the optim cache dir: create the predictor and look at what it wrote."""
    from hwdeploy_nvidia import create_gpu_predictor

    predictor = create_gpu_predictor(tiny_models["pir"], nvidia_gpu, {"tensorrt": False})
    optim = Path(predictor.config_report.optim_cache_dir)
    assert optim.is_relative_to(fresh_cache / "nvidia")
    assert (optim / "_optimized.json").is_file()  # Paddle's optimized program, written into our dir
    assert predictor.trt.program == optim / "_optimized.json"
    assert sum(predictor.trt.outside.values()) == sum(
        n for op, n in op_counts(optim / "_optimized.json").items() if not op.startswith(("builtin.", "pd_op.data",
                                                                                           "pd_op.fetch")))


# ---------------------------------------------------------------- engine cache keys


def _gpu(name="NVIDIA A10", cc="8.6", trt="8.6.1"):
    return Device("gpu", 0, name=name, backend=BACKEND, versions={"paddlepaddle": "3.3.1", "paddle_cuda": "12.3"},
                  details={"compute_capability": cc, "tensorrt": {"runtime_version": trt}})


def test_engine_keys_change_with_everything_that_changes_the_engines(tiny_models):
    model = load_model(tiny_models["pir"])
    base = engines.engine_key(model, parse_options({}, model), _gpu(), "pir-trt")
    same = [parse_options({"tensorrt": True}, model), parse_options({"threads": 2, "engine_cache": False}, model)]
    assert all(engines.engine_key(model, o, _gpu(), "pir-trt") == base for o in same)
    different = [parse_options({"precision": "fp16"}, model), parse_options({"max_batch_size": 4}, model),
                 parse_options({"min_subgraph_size": 5}, model), parse_options({"disable_ops": ["pd_op.relu"]}, model),
                 parse_options({"shapes": {"x": ([1, 8], [2, 8], [4, 8])}}, model),
                 parse_options({"sample_inputs": [[np.ones((2, 8), "float32")]]}, model),
                 parse_options({"sample_inputs": [[np.zeros((2, 8), "float32")]]}, model),
                 parse_options({"cuda_graph": True}, model)]
    keys = {engines.engine_key(model, o, _gpu(), "pir-trt") for o in different}
    assert base not in keys and len(keys) == len(different)
    for device in (_gpu(name="NVIDIA L4"), _gpu(cc="8.9"), _gpu(trt="10.0.1")):
        assert engines.engine_key(model, parse_options({}, model), device, "pir-trt") != base


# ---------------------------------------------------------------- option checking


@pytest.mark.parametrize("options, message", [
    ({"precison": "fp16"}, "unknown option(s) ['precison']"),
    ({"precision": "bf16"}, "option 'precision' must be one of"),
    ({"precision": "int8"}, "precision='int8' needs calibration_inputs"),
    ({"precision": "int8", "tensorrt": False, "calibration_inputs": [[np.ones((1, 8), "float32")]]}, "needs TensorRT"),
    ({"calibration_inputs": [[np.ones((1, 8), "float32")]]}, "only apply to precision='int8'"),
    ({"workspace_size": 10}, "option 'workspace_size' must be in"),
    ({"min_subgraph_size": True}, "option 'min_subgraph_size' must be int"),
    ({"tensorrt": "yes"}, "option 'tensorrt' must be bool or None"),
    ({"shapes": {"x": ([1, 8], [4, 8])}}, "must be (min, opt, max)"),
    ({"shapes": {"x": ([4, 8], [2, 8], [8, 8])}}, "need min <= opt <= max"),
    ({"shapes": {"x": ([1, 8, 1], [2, 8, 1], [4, 8, 1])}}, "has rank 3 but the model input has rank 2"),
    ({"shapes": {"x": ([1, 4], [2, 4], [4, 4])}}, "axis 1 is fixed to 8 by the model"),
    ({"shapes": {"y": ([1, 8], [2, 8], [4, 8])}}, "are not model inputs ['x']"),
    ({"sample_inputs": [[np.ones((2, 8), "float64")]]}, "dtype float64 != model's float32"),
    ({"sample_inputs": [[np.ones((2, 7), "float32")]]}, "does not fit the model's [-1, 8]"),
    ({"sample_inputs": [{"y": np.ones((2, 8), "float32")}]}, "inputs must be exactly ['x']"),
    ({"sample_inputs": np.ones((2, 8), "float32")}, "non-empty list of input batches"),
    ({"sample_inputs": [[np.ones((2, 8), "float32")]], "shapes": "x:1x8,2x8,4x8"}, "pass one"),
    ({"optimization_level": 9}, "option 'optimization_level' must be in [0, 5]"),
])
def test_bad_options_are_rejected_before_paddle_sees_them(tiny_models, options, message):
    with pytest.raises(OptionError) as err:  # typed: a plain ValueError would mark the plugin broken
        parse_options(options, load_model(tiny_models["pir"]))
    assert message in str(err.value)


def test_options_in_every_accepted_form(tiny_models):
    model = load_model(tiny_models["pir"])
    cli = parse_options({"shapes": "x:1x8,4x8,16x8", "disable_ops": "pd_op.relu"}, model)
    assert cli.shapes == {"x": ((1, 8), (4, 8), (16, 8))} and cli.disable_ops == ("pd_op.relu",)
    assert parse_shapes({"x": {"min": [1, 8], "opt": [2, 8], "max": [3, 8]}}) == {"x": ((1, 8), (2, 8), (3, 8))}
    tuned = parse_options({"sample_inputs": [np.ones((1, 8), "float32"), {"x": np.ones((5, 8), "float32")}]}, model)
    assert tuned.shape_mode == "tuned" and [b[0].shape for b in tuned.sample_inputs] == [(1, 8), (5, 8)]
    described = tuned.describe()
    assert described["sample_inputs"]["batches"] == 2 and len(described["sample_inputs"]["sha256"]) == 24
    json.dumps(described)
    assert parse_options({}, model).shape_mode == "static"
    model.metadata["batch_range"] = [1, 8]  # the zoo's: engines cover the whole batch range by default
    assert parse_options({}, model).max_batch_size == 8
    assert parse_options({"max_batch_size": 2}, model).max_batch_size == 2


def test_static_ranges_cover_the_batch_axis_only(tiny_models):
    from hwdeploy.contract.model import TensorSpec

    assert static_shape_ranges([TensorSpec("x", (-1, 8), "float32")], 4) == {"x": ((1, 8), (4, 8), (4, 8))}
    with pytest.raises(ValueError, match=r"'tokens' has dynamic axes \[0, 1\].*shapes="):
        static_shape_ranges([TensorSpec("tokens", (-1, -1), "int64")], 4)


# ---------------------------------------------------------------- the two-pass tuned flow, with Paddle's real file


def test_paddle_shape_range_files_parse(tiny_models, tmp_path, inference):
    """Pass 1 run for real (on the CPU here) and Paddle's own output read back by the plugin's parser."""
    shape_file = tmp_path / "shape_range_info.pbtxt"
    model = load_model(tiny_models["pir"])
    config = inference.Config(str(model.program), str(model.params))
    config.disable_glog_info()
    config.collect_shape_range_info(str(shape_file))
    predictor = inference.create_predictor(config)
    handle = predictor.get_input_handle("x")
    for batch in (3, 1, 6):
        handle.copy_from_cpu(np.ones((batch, 8), "float32"))
        predictor.run()
    del predictor
    ranges = engines.parse_shape_range_file(shape_file)
    assert ranges["x"]["min_shape"] == [1, 8] and ranges["x"]["max_shape"] == [6, 8]
    assert ranges["linear_0.w_0"] == {"min_shape": [8, 16], "max_shape": [8, 16], "opt_shape": [8, 16]}


def test_shape_collection_refuses_to_run_on_the_cpu(tiny_models, fresh_cache, cpu_only_paddle):
    model = load_model(tiny_models["legacy"])
    opts = parse_options({"sample_inputs": [[np.ones((2, 8), "float32")]]}, model)
    with pytest.raises(BackendError, match=r"shape-range collection refused.*config\.use_gpu\(\) == False"):
        engines.collect_shape_ranges(model, opts, _gpu())
    assert not list((fresh_cache / "nvidia" / "shapes").iterdir())  # nothing half-built is left to be trusted


# ---------------------------------------------------------------- reading programs without Paddle


def test_legacy_program_reader_agrees_with_paddles_protobuf(tiny_models):
    from paddle.base.proto import framework_pb2

    from hwdeploy.contract.model import TensorSpec

    path = tiny_models["legacy"]
    desc = framework_pb2.ProgramDesc.FromString(path.read_bytes())
    assert legacy_op_types(path) == [op.type for block in desc.blocks for op in block.ops]
    assert legacy_inputs(path) == [TensorSpec("x", (-1, 8), "float32")]
    feed = next(op for op in desc.blocks[0].ops if op.type == "feed")
    assert [a for v in feed.outputs for a in v.arguments] == ["x"]
    assert trt_summary(path) == {"engines": 0, "outside": {"elementwise_add": 2, "matmul_v2": 2, "relu": 1},
                                 "source": str(path)}


@pytest.mark.parametrize("cut", [1, 3, 0.5, -1])
def test_a_truncated_legacy_program_is_a_model_format_error_naming_the_file(tiny_models, tmp_path, cut):
    data = tiny_models["legacy"].read_bytes()
    broken = tmp_path / "tiny.pdmodel"
    broken.write_bytes(data[:int(len(data) * cut) if isinstance(cut, float) else cut])  # ends inside a field
    for read in (legacy_op_types, legacy_inputs, op_counts, trt_summary):
        with pytest.raises(ModelFormatError, match="tiny.pdmodel.*truncated") as info:
            read(broken)
        assert info.value.path == broken


def test_tensorrt_engine_ops_and_their_files_are_counted(tiny_models, tmp_path):
    doc = json.loads(tiny_models["pir"].read_text())
    ops = doc["program"]["regions"][0]["blocks"][0]["ops"]
    relu = next(op for op in ops if op["#"] == "1.relu")
    relu["#"] = "1.tensorrt_engine"  # what PIR-TensorRT leaves in a converted program
    relu.setdefault("A", []).append({"AT": {"#": "0.a_str", "D": "/cache/nvidia/pir-trt/k/model/engine_42_1.trt"},
                                     "N": "engine_serialized_data"})
    program = tmp_path / "converted.json"
    program.write_text(json.dumps(doc))
    summary = trt_summary(program)
    assert summary["engines"] == 1 and summary["outside"] == {"pd_op.add": 2, "pd_op.matmul": 2}
    assert engine_files(program) == ["/cache/nvidia/pir-trt/k/model/engine_42_1.trt"]


def test_the_options_reference_documents_this_plugin():
    from pathlib import Path

    import hwdeploy
    from hwdeploy.sdk.testing import assert_options_documented

    declared = [(p, s) for p, s in hwdeploy.option_schemas() if p == "nvidia"]
    assert declared
    assert_options_documented(declared, Path(__file__).resolve().parents[3] / "docs" / "options.md")


def test_every_option_refuses_every_wrong_value(tiny_models):
    """Through the option parser every GPU predictor starts with, and through ``hwdeploy convert``."""
    from hwdeploy_nvidia.options import OPTION_NAMES, OPTIONS
    from hwdeploy_nvidia.plugin import _convert_options

    assert set(OPTION_NAMES) == OPTIONS.names()  # GpuOptions and the declared schema name the same options
    model = load_model(tiny_models["pir"])
    assert testing.assert_refuses_wrong_options(OPTIONS, lambda options: parse_options(options, model)) >= 60
    assert testing.assert_refuses_wrong_options(
        _convert_options(), lambda options: hwdeploy.convert(model, "tensorrt", **options)) >= 30
