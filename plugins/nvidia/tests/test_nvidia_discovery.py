"""Discovery: real probes on this machine, and every driver/wheel/TensorRT combination through devices_from."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

import hwdeploy
from hwdeploy.errors import DeviceNotFoundError
from hwdeploy.sdk.isolation import ProbeResult, run_probe
from hwdeploy_nvidia.discovery import BACKEND, PRIORITY, devices_from, fingerprint, visible_gpus


# ---------------------------------------------------------------- this machine, real probes


def test_nvml_probe_reports_the_driver_state_truthfully():
    probe = run_probe("hwdeploy_nvidia.probes:nvml_info", timeout=30)
    assert probe.ok, probe.error  # the probe itself never fails: it reports
    info = probe.value
    try:
        import ctypes

        ctypes.CDLL("libnvidia-ml.so.1")
        has_library = True
    except OSError:
        has_library = False
    if not has_library:
        assert info == {"ok": False, "kind": "no-library", "error": info["error"]}
        assert "not found" in info["error"].lower()
    else:
        assert "kind" not in info or info["kind"] != "no-library"


def test_paddle_probe_matches_the_installed_distribution(paddle_build):
    gpu_dist = any(d.metadata["Name"] == "paddlepaddle-gpu" for d in metadata.distributions())
    assert paddle_build["cuda_build"] is gpu_dist
    assert paddle_build["version"] == metadata.version("paddlepaddle-gpu" if gpu_dist else "paddlepaddle")
    if not gpu_dist:
        assert paddle_build["trt_compile"] == [0, 0, 0]
        assert paddle_build["cuda"] == "" and "device_count" not in paddle_build
    # The probe lists the real Config API, which the config code checks calls against.
    assert "enable_tensorrt_engine" in paddle_build["config_methods"]


def test_discovered_gpu_says_what_is_missing_and_how_to_fix_it(nvidia_gpu, paddle_build):
    nvml = run_probe("hwdeploy_nvidia.probes:nvml_info", timeout=30).value
    if nvidia_gpu.available:
        pytest.skip(f"a usable NVIDIA GPU is present: {nvidia_gpu.name}")
    assert nvidia_gpu.kind == "gpu" and nvidia_gpu.backend == BACKEND and nvidia_gpu.priority == PRIORITY
    reason = nvidia_gpu.reason
    if nvml.get("kind") == "no-library":
        assert "no NVIDIA driver" in reason and "libnvidia-ml.so.1" in reason and "install the NVIDIA driver" in reason
    if not paddle_build["cuda_build"]:
        assert "CPU-only wheel" in reason and "paddle.is_compiled_with_cuda() == False" in reason
        assert f"pip install paddlepaddle-gpu=={paddle_build['version']}" in reason
        assert nvidia_gpu.details["tensorrt"] == {"subgraph": False, "pir": False,
                                                  "reason": "Paddle is not a CUDA build, so it has no TensorRT"}


def test_discovery_imports_neither_paddle_nor_nvml_in_the_calling_process():
    code = ("import sys, json, hwdeploy\n"
            "found = [d.to_dict() for d in hwdeploy.devices(refresh=True) if d.plugin == 'nvidia']\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('paddle', 'pynvml', 'tensorrt'))\n"
            "print(json.dumps({'found': found, 'heavy': heavy}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert [d["kind"] for d in result["found"]] and all(d["kind"] == "gpu" for d in result["found"])


def test_the_nvidia_plugin_loads_through_its_entry_point():
    from hwdeploy.contract.manager import get_plugin_manager

    status = get_plugin_manager().statuses["nvidia"]
    assert status.state == "loaded" and status.distribution == "hwdeploy-nvidia"
    assert status.module == "hwdeploy_nvidia.plugin" and not status.hook_errors


@pytest.mark.parametrize("device", ["gpu", "gpu:0"])
@pytest.mark.parametrize("policy", ["error", "allow"])
def test_predictor_on_gpu_raises_and_never_returns_a_cpu_predictor(tiny_models, nvidia_gpu, device, policy):
    if nvidia_gpu.available:
        pytest.skip("a usable NVIDIA GPU is present")
    with pytest.raises(DeviceNotFoundError) as err:
        hwdeploy.predictor(tiny_models["pir"], device=device, fallback=policy)
    message = str(err.value)
    assert f"device {device!r} is not available" in message
    assert nvidia_gpu.reason in message  # the plugin's own reason reaches the user


def test_auto_never_claims_the_missing_gpu(tiny_models, nvidia_gpu):
    if nvidia_gpu.available:
        pytest.skip("a usable NVIDIA GPU is present")
    predictor = hwdeploy.predictor(tiny_models["pir"], device="auto")
    receipt = predictor.receipt()
    assert predictor.device.kind != "gpu" and receipt.actual == predictor.device.id
    assert not receipt.fallback_reasons()


# ---------------------------------------------------------------- every combination, from probe answers

GPU = {"nvml_index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1111", "pci_bus_id": "00000000:1A:00.0",
       "memory_total": 85_000_000_000, "memory_used": 1_000_000, "compute_capability": "9.0",
       "utilization_gpu": 3, "utilization_memory": 1}
GPU2 = dict(GPU, nvml_index=1, uuid="GPU-2222", name="NVIDIA L4", compute_capability="8.9", memory_total=24_000_000_000)
NVML_OK = {"ok": True, "driver": "550.54.15", "cuda_driver": "12.4", "gpus": [GPU, GPU2]}
PADDLE_GPU = {"version": "3.3.1", "cuda_build": True, "rocm_build": False, "cuda": "12.3", "cudnn": "9.0.0",
              "trt_compile": [8, 6, 1], "trt_runtime": [8, 6, 1], "trt_python": "8.6.1", "device_count": 2,
              "devices": [{"name": GPU["name"]}, {"name": GPU2["name"]}]}
PADDLE_CPU = {"version": "3.3.1", "cuda_build": False, "rocm_build": False, "cuda": "", "cudnn": "",
              "trt_compile": [0, 0, 0], "trt_runtime": [0, 0, 0], "trt_python": ""}


def test_gpus_with_a_cuda_tensorrt_build_are_available_with_versions_and_details():
    devices = devices_from(NVML_OK, PADDLE_GPU)
    assert [(d.id, d.name, d.available) for d in devices] == [("gpu:0", GPU["name"], True),
                                                               ("gpu:1", "NVIDIA L4", True)]
    first = devices[0]
    assert first.memory_bytes == GPU["memory_total"] and first.priority == 100 and first.backend == BACKEND
    assert first.versions == {"paddlepaddle": "3.3.1", "paddle_cuda": "12.3", "cudnn": "9.0.0", "tensorrt": "8.6.1",
                              "driver": "550.54.15", "cuda_driver": "12.4"}
    assert first.details["compute_capability"] == "9.0" and first.details["uuid"] == "GPU-1111"
    assert first.details["tensorrt"]["subgraph"] and first.details["tensorrt"]["pir"]
    assert fingerprint(first) == {"gpu": GPU["name"], "compute_capability": "9.0", "tensorrt": "8.6.1",
                                  "cuda": "12.3", "paddlepaddle": "3.3.1"}
    assert fingerprint(devices[1]) != fingerprint(first)  # an engine for one GPU is never served to another


def test_a_cpu_only_wheel_makes_every_gpu_unavailable_with_the_fix():
    devices = devices_from(NVML_OK, PADDLE_CPU)
    assert len(devices) == 2 and not any(d.available for d in devices)
    for d in devices:
        assert "CPU-only wheel" in d.reason and "pip install paddlepaddle-gpu==3.3.1" in d.reason


def test_no_tensorrt_keeps_the_gpu_but_says_why_tensorrt_is_off():
    no_trt = dict(PADDLE_GPU, trt_compile=[0, 0, 0], trt_runtime=[0, 0, 0], trt_python="")
    device = devices_from(NVML_OK, no_trt)[0]
    assert device.available and "tensorrt" not in device.versions
    status = device.details["tensorrt"]
    assert status["subgraph"] is False and "get_trt_compile_version() == (0, 0, 0)" in status["reason"]

    missing_runtime = dict(PADDLE_GPU, trt_runtime=[0, 0, 0], trt_runtime_error="OSError: libnvinfer.so.8: cannot open")
    status = devices_from(NVML_OK, missing_runtime)[0].details["tensorrt"]
    assert status["subgraph"] is False
    assert "libnvinfer.so.8" in status["reason"] and "tensorrt=False" in status["reason"]

    no_python = dict(PADDLE_GPU, trt_python="", trt_python_error="ModuleNotFoundError: No module named 'tensorrt'")
    status = devices_from(NVML_OK, no_python)[0].details["tensorrt"]
    assert status["subgraph"] is True and status["pir"] is False and "pip install tensorrt==8.6.1" in status["reason"]


def test_a_driver_older_than_the_wheels_cuda_is_named():
    old_driver = dict(NVML_OK, driver="470.82", cuda_driver="11.4")
    devices = devices_from(old_driver, PADDLE_GPU)
    assert not any(d.available for d in devices)
    assert "supports CUDA up to 11.4 but Paddle is built for CUDA 12.3" in devices[0].reason


def test_gpus_paddle_cannot_see_are_unavailable():
    devices = devices_from(NVML_OK, dict(PADDLE_GPU, device_count=1))
    assert [d.available for d in devices] == [True, False]
    assert "Paddle's CUDA runtime sees 1 device(s), NVML 2" in devices[1].reason


def test_cuda_visible_devices_maps_cuda_ordinals_to_nvml_gpus():
    devices = devices_from(NVML_OK, dict(PADDLE_GPU, device_count=1, devices=[{"name": "NVIDIA L4"}]), "1")
    assert [(d.id, d.name, d.details["nvml_index"]) for d in devices] == [("gpu:0", "NVIDIA L4", 1)]
    assert "shows 1 of 2" in devices[0].details["visibility"]
    assert visible_gpus([GPU, GPU2], "GPU-2222,GPU-1111")[0] == [GPU2, GPU]
    assert visible_gpus([GPU, GPU2], "0,7,1")[0] == [GPU]  # CUDA stops at the first invalid entry
    hidden = devices_from(NVML_OK, PADDLE_GPU, "")
    assert len(hidden) == 1 and not hidden[0].available and "CUDA_VISIBLE_DEVICES=''" in hidden[0].reason


def test_cuda_order_differing_from_nvml_order_is_flagged():
    swapped = dict(PADDLE_GPU, devices=[{"name": "NVIDIA L4"}, {"name": GPU["name"]}])
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in devices_from(NVML_OK, swapped)[0].details["warning"]


@pytest.mark.parametrize("kind, expected", [
    ("driver-not-loaded", "kernel driver is not loaded"),
    ("no-binding", "pip install nvidia-ml-py"),
    ("no-permission", "NVML failed"),
])
def test_nvml_failures_are_reported_by_kind(kind, expected):
    devices = devices_from({"ok": False, "kind": kind, "error": "boom"}, PADDLE_GPU)
    assert len(devices) == 1 and not devices[0].available and expected in devices[0].reason


def test_a_failed_or_hung_probe_is_a_reason_not_a_crash():
    hung = ProbeResult(False, error="hwdeploy_nvidia.probes:nvml_info timed out after 10s", timed_out=True)
    crashed = ProbeResult(False, error="hwdeploy_nvidia.probes:paddle_info killed by SIGSEGV", returncode=-11)
    device = devices_from(hung, crashed)[0]
    assert not device.available
    assert "timed out after 10s" in device.reason and "killed by SIGSEGV" in device.reason


def test_unsupported_paddle_versions_are_refused():
    device = devices_from(NVML_OK, dict(PADDLE_GPU, version="2.6.2"))[0]
    assert not device.available and "paddle 2.6.2 is outside the versions this plugin supports" in device.reason
    assert devices_from(NVML_OK, dict(PADDLE_GPU, version="0.0.0"))[0].available  # a source build
