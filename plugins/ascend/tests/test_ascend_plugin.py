"""The Ascend plugin without its device: discovery says why, errors instead of aborts, the vendor tool, Lite.

Plus the hardware tests (``-m ascend``) a lab with a real Ascend NPU runs;
here they skip with the reason.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "simdevice"))
import simdevice_testkit as kit  # noqa: E402

import hwdeploy  # noqa: E402
from hwdeploy import zoo  # noqa: E402
from hwdeploy import custom_device  # noqa: E402
from hwdeploy.plugins import get_plugin_manager  # noqa: E402
from hwdeploy.receipt import CARRIED_PLACEMENT, FORCED_OFF, NO_KERNEL  # noqa: E402
from hwdeploy_ascend.plugin import ASCEND as VENDOR  # noqa: E402

KIND = "npu"
PLUGIN = "ascend"
DISTRIBUTION = "hwdeploy-ascend"
INSTALL_HINT = "paddle-custom-npu"
LITE_TARGET = "huawei_ascend_npu"
SMI = "npu-smi"
SMI_USAGE_ARGS = "info -t usages -i 0"  # what the sampler runs for physical device 0
SMI_USAGE_OUTPUT = """\
        Memory Usage Rate(%)          : 3
        Aicore Usage Rate(%)          : 37
        Aivector Usage Rate(%)        : 0
"""
HARDWARE = "Huawei Ascend NPU"


@pytest.fixture(autouse=True)
def forget_discovery():
    """Tests here change the environment discovery depends on: never leave their devices cached."""
    yield
    from hwdeploy.api import clear_discovery_cache

    clear_discovery_cache()


@pytest.fixture
def no_plugin_root(tmp_path, monkeypatch) -> Path:
    """A CUSTOM_DEVICE_ROOT with no plugin library in it: Paddle registers no custom device."""
    root = tmp_path / "empty-root"
    root.mkdir()
    monkeypatch.setenv("CUSTOM_DEVICE_ROOT", str(root))
    return root


def fake_tool(directory: Path, name: str, body: str) -> Path:
    """An executable ``name`` in ``directory`` (a stand-in for the vendor tool, which this machine lacks)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def our_device(found) -> list:
    return [d for d in found if d.kind == KIND and d.plugin == PLUGIN]


def test_ascend_plugin_loads_through_its_entry_point():
    status = get_plugin_manager().statuses[PLUGIN]
    assert status.state == "loaded" and status.distribution == DISTRIBUTION, status.error
    assert "hwdeploy<0.2,>=0.1" in status.requires  # its compatibility declaration


def test_ascend_discovery_without_a_plugin_says_what_is_missing(no_plugin_root):
    found = our_device(hwdeploy.devices(refresh=True))
    assert len(found) == 1
    absent = found[0]
    assert not absent.available and absent.id == f"{KIND}:0" and absent.priority == 90
    assert f"no '{KIND}' CustomDevice plugin" in absent.reason
    assert str(no_plugin_root) in absent.reason  # where it looked
    assert INSTALL_HINT in absent.reason and "CUSTOM_DEVICE_ROOT" in absent.reason  # how to fix it
    if shutil.which(SMI) is None:
        assert f"{SMI} not found on PATH" in absent.reason
    assert hwdeploy.devices()[0].available  # the CPU is still there, listed first


def test_ascend_predictor_without_the_device_is_a_clear_error_not_an_abort(no_plugin_root):
    result = kit.in_child("scenario_predictor_error", "zoo:mlp", KIND, None,
                          env={"CUSTOM_DEVICE_ROOT": str(no_plugin_root)})
    value = kit.child_value(result)  # ok: the child exited normally (no SIGABRT)
    assert result.returncode == 0
    assert value["error"] == "DeviceNotFoundError", value
    assert f"device '{KIND}' is not available" in value["message"]
    assert f"no '{KIND}' CustomDevice plugin" in value["message"]
    assert "cpu:0" in value["message"]  # what is available instead


def test_ascend_unguarded_enable_custom_device_would_abort(no_plugin_root):
    """Why hwdeploy checks first: Paddle 3.3.1 aborts the process for an unregistered device type."""
    model = kit.tiny_models() / "mlp_softmax"
    code = textwrap.dedent(f"""
        from paddle import inference
        config = inference.Config({str(model / 'model.json')!r}, {str(model / 'model.pdiparams')!r})
        config.enable_custom_device({KIND!r}, 0)
        inference.create_predictor(config)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                          env=dict(os.environ, GLOG_minloglevel="2"))
    assert done.returncode != 0, "Paddle no longer aborts here: the guard is still right, update this note"


def test_ascend_vendor_tool_is_reported_and_sampled(tmp_path, monkeypatch, no_plugin_root):
    bin_dir = tmp_path / "bin"
    (tmp_path / "usage.txt").write_text(SMI_USAGE_OUTPUT)
    fake_tool(bin_dir, SMI, f"""
        if [ "$*" = "{SMI_USAGE_ARGS}" ]; then cat {tmp_path / 'usage.txt'}; else echo "{SMI} 1.0"; fi
    """)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    absent = our_device(hwdeploy.devices(refresh=True))[0]
    assert absent.details["smi"] == f"{SMI} ran" and f"{SMI} ran" in absent.reason

    device = hwdeploy.Device(KIND, 0, backend=custom_device.BACKEND, details={"physical_id": 0})
    plugin, sampler = get_plugin_manager().call_first("hwdeploy_utilization_sampler", device=device)
    assert plugin == PLUGIN
    sampler.interval = 0.05
    sampler.start()
    time.sleep(0.4)
    stats = sampler.stop()
    assert stats["samples"] >= 1 and stats["mean_busy"] == pytest.approx(0.37) and stats["max_busy"] == 0.37


def test_ascend_no_vendor_tool_means_no_sampler(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    device = hwdeploy.Device(KIND, 0, backend=custom_device.BACKEND)
    assert get_plugin_manager().call_first("hwdeploy_utilization_sampler", device=device) is None


def test_ascend_hanging_vendor_tool_does_not_hang_discovery(tmp_path, monkeypatch, no_plugin_root):
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, SMI, "sleep 60\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(custom_device, "SMI_TIMEOUT", 0.5)
    absent = our_device(hwdeploy.devices(refresh=True))[0]
    assert not absent.available and f"{SMI} failed: timed out" in absent.details["smi"]


def test_ascend_lite_target_belongs_to_the_arm_plugin(monkeypatch):
    monkeypatch.setattr(custom_device, "lite_plugin_installed", lambda: True)
    assert VENDOR.conversion_targets() == [] and VENDOR.convert_model(LITE_TARGET) is None
    monkeypatch.setattr(custom_device, "lite_plugin_installed", lambda: False)
    assert [t.name for t in VENDOR.conversion_targets()] == [LITE_TARGET]
    assert VENDOR.convert_model("webgl") is None  # not ours
    with pytest.raises(hwdeploy.ConversionError, match="install hwdeploy-arm"):
        VENDOR.convert_model(LITE_TARGET)


@pytest.mark.skipif(custom_device.lite_plugin_installed(), reason="hwdeploy-arm is installed: it owns the Lite target")
def test_ascend_lite_conversion_without_paddle_lite_is_a_clear_error():
    assert (PLUGIN, LITE_TARGET) in [(p, t.name) for p, t in hwdeploy.conversion_targets()]
    with pytest.raises(hwdeploy.ConversionError, match="paddlelite"):
        hwdeploy.convert(kit.tiny_models() / "mlp_softmax", LITE_TARGET)


# A kernel-program excerpt as Paddle 3.3.1 prints it (VLOG(2) of pir_interpreter), abridged.
DUMP = """\
======================== The network executed by pir interpreter ========================
{
    (%0) = "builtin.parameter" () {parameter_name:"linear_1.b_0",persistable:[true]} : () -> custom_device_tensor<4xf32>
    (%4) = "data(phi_kernel)" () {dtype:float32,kernel_key:<backend:Undefined|layout:Undefined(AnyLayout)|dtype:float32>,kernel_name:"data",name:"x",op_name:"pd_op.data"} : () -> custom_device_tensor<-1x8xf32>
    (%5) = "matmul(phi_kernel)" (%4, %3) {kernel_key:<backend:npu|layout:NCHW|dtype:float32>,kernel_name:"matmul",op_name:"pd_op.matmul",transpose_x:false,transpose_y:false} : (custom_device_tensor<-1x8xf32>, custom_device_tensor<8x16xf32>) -> custom_device_tensor<-1x16xf32>
    (%6) = "batch_norm_(phi_kernel)" (%5) {is_inplace:true,kernel_key:<backend:CPU|layout:NCHW|dtype:float32>,kernel_name:"batch_norm",op_name:"pd_op.batch_norm_"} : (cpu_tensor<-1x16xf32>) -> cpu_tensor<-1x16xf32>
    (%7) = "relu_(phi_kernel)" (%6) {is_inplace:true,kernel_key:<backend:CPU|layout:NCHW|dtype:float32>,kernel_name:"relu",op_name:"pd_op.relu_"} : (cpu_tensor<-1x16xf32>) -> cpu_tensor<-1x16xf32>
    (%8) = "memcpy_h2d(phi_kernel)" (%7) {dst_place_type:1,kernel_key:<backend:CUSTOM|layout:NCHW|dtype:float32>,kernel_name:"memcpy_h2d",op_name:"pd_op.memcpy_h2d"} : (cpu_tensor<-1x16xf32>) -> custom_device_tensor<-1x16xf32>
    (%9) = "softmax_(phi_kernel)" (%8) {axis:-1,is_inplace:true,kernel_key:<backend:ONEDNN|layout:ONEDNN|dtype:float32>,kernel_name:"softmax",op_name:"pd_op.softmax_"} : (cpu_tensor<-1x4xf32>) -> cpu_tensor<-1x4xf32>
    (%10) = "reshape(phi_kernel)" (%9) {kernel_key:<backend:CUSTOM|layout:NCHW|dtype:float32>,kernel_name:"reshape",op_name:"pd_op.reshape"} : (custom_device_tensor<-1x4xf32>) -> custom_device_tensor<-1x4xf32>
    () = "builtin.shadow_output" (%9) {output_name:"fetch_name_0"} : (cpu_tensor<-1x4xf32>) ->
}
"""


def test_ascend_kernel_program_is_classified_per_op():
    records = custom_device.parse_kernel_program(DUMP)
    assert [(r.kernel, r.backend) for r in records] == [
        ("data", "Undefined"), ("matmul", KIND), ("batch_norm", "CPU"), ("relu", "CPU"), ("memcpy_h2d", "CUSTOM"),
        ("softmax", "ONEDNN"), ("reshape", "CUSTOM")]
    kernels = {"matmul": {"float32"}, "relu": {"float32"}, "reshape": {"float32"}}  # as the inventory says
    placement = custom_device.classify(records, KIND, f"{KIND}:0", kernels, blocked={"softmax"})
    assert [(op.op, op.device, op.count, op.reason) for op in placement.ops] == [
        ("batch_norm", "cpu:0", 1, NO_KERNEL), ("matmul", f"{KIND}:0", 1, ""),
        ("relu", "cpu:0", 1, CARRIED_PLACEMENT), ("reshape", f"{KIND}:0", 1, ""),
        ("softmax", "cpu:0", 1, FORCED_OFF)]
    assert placement.transfers == {"memcpy_h2d": 1} and placement.actual == f"{KIND}:0"
    assert custom_device.parse_kernel_program("no dump here") is None  # the dump was not printed at all


# ---------------------------------------------------------------------------------------------- hardware lab


def _real_device() -> str | None:
    """Why there is no real device here (None when there is one)."""
    if shutil.which(SMI) is None:
        return f"needs a {HARDWARE} ({SMI} not found on PATH); run `pytest -m {PLUGIN}` in the hardware lab"
    if "simdevice" in os.environ.get("CUSTOM_DEVICE_ROOT", ""):
        return "CUSTOM_DEVICE_ROOT points at the simulated device, not at the vendor's plugin"
    devices = our_device(hwdeploy.devices(refresh=True))
    if not devices or not devices[0].available:
        return f"{SMI} is present but Paddle has no usable {KIND}: {devices[0].reason if devices else 'not reported'}"
    return None


@pytest.mark.ascend
def test_ascend_hardware_zoo_parity_and_receipts():
    reason = _real_device()
    if reason:
        pytest.skip(reason)
    plan = [[f"zoo:{name}", "allow"] for name in zoo.names()]
    report = kit.child_value(kit.in_child("scenario_run", plan, f"{KIND}:0", 2, 1, KIND))
    report.pop("_inventory")
    for key, entry in report.items():
        assert "error" not in entry, (key, entry.get("message"))
        assert entry["receipt"]["ops_known"], key
        assert entry["rel_l2"] <= 1e-3, (key, entry["rel_l2"])  # accelerators may accumulate in reduced precision
