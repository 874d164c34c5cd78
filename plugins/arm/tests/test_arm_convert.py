"""Conversion to Paddle Lite .nb files for arm, x86, OpenCL and the NNAdapter NPU targets, checked structurally."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

import hwdeploy
from hwdeploy.errors import OptionError, UnsupportedOpsError
from hwdeploy_arm import convert_to_nb, read_nb
from hwdeploy_arm.convert import valid_targets_for


def test_targets_are_offered():
    offered = {t.name: (plugin, t) for plugin, t in hwdeploy.conversion_targets()}
    for name in ("arm", "x86", "opencl", "huawei_ascend_npu", "cambricon_mlu"):
        assert offered[name][0] == "arm", name
    assert offered["arm"][1].device_kinds == ("arm",) and offered["x86"][1].device_kinds == ("cpu",)


def test_valid_targets_always_name_the_npu_first():
    assert valid_targets_for("arm", {}) == "arm"
    assert valid_targets_for("huawei_ascend_npu", {}) == "huawei_ascend_npu,arm"
    assert valid_targets_for("cambricon_mlu", {}) == "cambricon_mlu,x86"
    assert valid_targets_for("cambricon_mlu", {"host": "arm"}) == "cambricon_mlu,arm"
    with pytest.raises(OptionError, match="option 'host' must be one of"):
        valid_targets_for("huawei_ascend_npu", {"host": "riscv"})
    with pytest.raises(OptionError, match="unknown option"):
        valid_targets_for("arm", {"threads": 2})
    with pytest.raises(OptionError, match="NNAdapter targets"):
        valid_targets_for("x86", {"host": "arm"})


@pytest.mark.parametrize("source", ["pir", "legacy"])
def test_arm_nb_holds_arm_kernels(source, lite_python, zoo_model):
    z = zoo_model("mobilenet_v2")
    artifact = hwdeploy.convert(z.model if source == "pir" else z.legacy, "arm")
    info = read_nb(artifact.path("model.nb"))
    assert info.version == "v2.13-rc" and info.compute_targets == {"arm"}
    assert info.kernels[("conv2d", "arm")] >= 30 and info.kernels[("depthwise_conv2d", "arm")] == 17
    report = artifact.metadata
    assert report["valid_targets"] == "arm"
    assert report["program"] == ("pir-translated" if source == "pir" else "legacy")
    assert report["patches"]["add_xshape_outputs"] >= 1  # the flatten before the classifier
    # opt's --print_model_ops table: every op of the model has an ARM (or host) kernel
    assert all(set(targets) & {"arm", "host"} for targets in report["model_ops"].values())
    assert report["model_ops"]["conv2d"] == ["arm"]
    assert report["inputs"] == [{"name": "x", "shape": [-1, 3, 224, 224], "dtype": "float32"}]


def test_conversions_are_cached(lite_python, zoo_model):
    model = zoo_model("mlp").model
    first = hwdeploy.convert(model, "x86")
    again = hwdeploy.convert(model, "x86")
    assert again.cached and again.directory == first.directory
    assert read_nb(again.path("model.nb")).compute_targets == {"x86"}


def test_ascend_nb_is_one_nnadapter_subgraph(lite_python, zoo_model):
    artifact = hwdeploy.convert(zoo_model("mobilenet_v2").model, "huawei_ascend_npu")
    info = read_nb(artifact.path("model.nb"))
    assert info.compute_targets == {"nnadapter"} and info.kernels[("subgraph", "nnadapter")] == 1
    report = artifact.metadata
    assert report["valid_targets"] == "huawei_ascend_npu,arm" and report["nnadapter_device"] == "huawei_ascend_npu"
    assert report["subgraph_ops"]["conv2d"] == 35 and report["subgraph_ops"]["depthwise_conv2d"] == 17
    assert report["host_fallback_ops"] == {}


def test_npu_conversion_names_every_op_left_on_the_host_cpu(lite_python, zoo_model, tmp_path, caplog):
    """Cambricon has no NNAdapter converter for depthwise_conv2d or matmul_v2: they stay on the CPU."""
    with caplog.at_level(logging.WARNING, logger="hwdeploy.lite"):
        artifact = convert_to_nb(zoo_model("mobilenet_v2").model, "cambricon_mlu,x86", tmp_path)
    report = artifact.metadata
    assert report["host_fallback_ops"] == {"depthwise_conv2d": 17, "matmul_v2": 1}
    assert report["host_fallback_no_kernel"] == ["depthwise_conv2d", "matmul_v2"]
    assert "cambricon_mlu" not in report["model_ops"]["depthwise_conv2d"]
    assert report["subgraphs"] == 19  # the graph is cut at every depthwise conv
    info = read_nb(artifact.path("model.nb"))
    assert info.kernels[("depthwise_conv2d", "x86")] == 17
    assert "fall back to the host CPU: depthwise_conv2d x17, matmul_v2 x1" in caplog.text
    assert (tmp_path / "lite_report.json").exists() and (tmp_path / "graph" / "Block_0.dot").exists()


def test_gru_on_ascend_keeps_the_rnn_on_the_arm_host(lite_python, zoo_model):
    artifact = hwdeploy.convert(zoo_model("gru_text").model, "huawei_ascend_npu")
    report = artifact.metadata
    assert report["host_fallback_ops"] == {"rnn": 1}
    assert report["model_ops"]["rnn"] == ["arm"]  # NNAdapter's Ascend driver has no rnn converter
    assert read_nb(artifact.path("model.nb")).kernels[("rnn", "arm")] == 1


def test_opencl_nb(lite_python, zoo_model):
    info = read_nb(hwdeploy.convert(zoo_model("resnet18").model, "opencl").path("model.nb"))
    assert "opencl" in info.compute_targets


@pytest.mark.parametrize("source, op", [("legacy", "cumprod"), ("pir", "pd_op.cumprod")])
def test_ops_lite_cannot_run_are_named(source, op, lite_python, cumprod_models):
    with pytest.raises(UnsupportedOpsError) as info:
        hwdeploy.convert(cumprod_models[source], "x86")
    assert info.value.ops == [op]
    assert op in str(info.value)


def test_lite_ops_cli_shows_the_op_table_and_host_fallback(lite_python):
    cli = Path(sys.executable).with_name("hwdeploy")
    proc = subprocess.run([str(cli), "lite-ops", "zoo:gru_text", "--target", "huawei_ascend_npu"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "host CPU fallback: rnn x1" in proc.stdout
    row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("rnn "))
    assert row == ["rnn", "-", "Y", "-"]  # no Ascend kernel, an ARM one


def test_plugin_import_is_cheap():
    code = "import sys, hwdeploy_arm.plugin, hwdeploy_arm; print('paddle' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False"


def test_the_options_reference_documents_this_plugin():
    from pathlib import Path

    import hwdeploy
    from hwdeploy.sdk.testing import assert_options_documented

    declared = [(p, s) for p, s in hwdeploy.option_schemas() if p == "arm"]
    assert declared
    assert_options_documented(declared, Path(__file__).resolve().parents[3] / "docs" / "options.md")


def test_every_option_refuses_every_wrong_value(zoo_model):
    import hwdeploy
    from hwdeploy.sdk.testing import assert_refuses_wrong_options
    from hwdeploy_arm import plugin

    model = zoo_model("mlp").model
    device = hwdeploy.Device("cpu", 0, backend=plugin.BACKEND, details={"engines": ["paddle-lite"]})
    assert assert_refuses_wrong_options(
        plugin.OPTIONS, lambda options: plugin.hwdeploy_create_predictor(model, device, options)) >= 20
    assert assert_refuses_wrong_options(
        plugin.CONVERT_OPTIONS, lambda options: hwdeploy.convert(model, "huawei_ascend_npu", **options)) >= 6
