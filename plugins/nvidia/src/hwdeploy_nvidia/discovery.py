"""Which NVIDIA GPUs hwdeploy can use, and exactly what is missing when it cannot.

Two isolated probes (never imported here): NVML for the hardware and driver,
and ``import paddle`` in a child process for how Paddle was built. The pure
function :func:`devices_from` turns their answers into :class:`hwdeploy.Device`
records, so every combination can be reasoned about (and tested) without a GPU.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hwdeploy.contract.records import Device
from hwdeploy.sdk.isolation import ProbeResult, run_probe

KIND = "gpu"
BACKEND = "paddle-inference-gpu"
PRIORITY = 100
#: Paddle versions this plugin's Config calls were written against.
SUPPORTED_PADDLE = ((3, 0), (3, 4))  # [min, max)

NVML_TIMEOUT, NVML_TTL = 10.0, 10.0  # utilisation changes: keep it fresh
PADDLE_TIMEOUT, PADDLE_TTL = 90.0, 3600.0  # the build changes only with a reinstall (the key has its version)
_ENV_KEYS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "LD_LIBRARY_PATH", "NVIDIA_VISIBLE_DEVICES")

FIX_DRIVER = ("install the NVIDIA driver for this GPU (it provides libnvidia-ml.so.1 and libcuda.so.1); in a container,"
              " start it with the NVIDIA container toolkit (docker run --gpus all ...)")


def fix_wheel(paddle_version: str = "") -> str:
    pin = f"=={paddle_version}" if paddle_version else ""
    return (f"pip uninstall -y paddlepaddle && pip install paddlepaddle-gpu{pin} -i <Paddle's wheel index for your CUDA"
            f" version, e.g. the cu126 one listed on the PaddlePaddle install page>")


FIX_TRT = ("install TensorRT matching the one Paddle was built with (pip install tensorrt==<version>, or the NVIDIA"
           " TensorRT libraries on LD_LIBRARY_PATH), or pass tensorrt=False to run on Paddle's native CUDA kernels")


def run_probes(refresh: bool = False) -> tuple[ProbeResult, ProbeResult]:
    """Run the NVML and Paddle probes side by side (cached: NVML briefly, Paddle's build for a day)."""
    ttl = 0.0 if refresh else None
    with ThreadPoolExecutor(2) as pool:
        nvml = pool.submit(run_probe, "hwdeploy_nvidia.probes:nvml_info", timeout=NVML_TIMEOUT,
                           cache_ttl=NVML_TTL if ttl is None else ttl, cache_env=_ENV_KEYS)
        paddle = pool.submit(run_probe, "hwdeploy_nvidia.probes:paddle_info", timeout=PADDLE_TIMEOUT,
                             cache_ttl=PADDLE_TTL if ttl is None else ttl, cache_env=_ENV_KEYS)
        return nvml.result(), paddle.result()


def discover(refresh: bool = False) -> list[Device]:
    nvml, paddle = run_probes(refresh)
    return devices_from(nvml, paddle, os.environ.get("CUDA_VISIBLE_DEVICES"))


def _probe_value(probe: ProbeResult | dict) -> tuple[dict | None, str]:
    if isinstance(probe, dict):
        return probe, ""
    if probe.ok and isinstance(probe.value, dict):
        return probe.value, ""
    return None, probe.error or "probe failed"


def visible_gpus(gpus: list[dict], cuda_visible: str | None) -> tuple[list[dict], str]:
    """NVML's GPUs in CUDA ordinal order under ``CUDA_VISIBLE_DEVICES``; a note when it hides some."""
    if cuda_visible is None:
        return list(gpus), ""
    tokens = [t.strip() for t in cuda_visible.split(",") if t.strip()]
    chosen = []
    for token in tokens:
        if token.isdigit():
            match = [g for g in gpus if g.get("nvml_index") == int(token)]
        else:
            match = [g for g in gpus if str(g.get("uuid", "")).startswith(token)]
        if not match:
            break  # CUDA stops at the first invalid entry
        chosen.append(match[0])
    if len(chosen) == len(gpus):
        return chosen, ""
    return chosen, f"CUDA_VISIBLE_DEVICES={cuda_visible!r} shows {len(chosen)} of {len(gpus)} GPU(s)"


def _version_at_least(have: str, need: str) -> bool:
    def parse(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split(".")[:2] if p.isdigit())
    try:
        return parse(have) >= parse(need)
    except ValueError:
        return True


def _paddle_supported(version: str) -> bool:
    parts = version.split(".")
    try:
        major_minor = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        return True  # a development build: let it through
    if major_minor == (0, 0):
        return True
    return SUPPORTED_PADDLE[0] <= major_minor < SUPPORTED_PADDLE[1]


def tensorrt_status(paddle: dict) -> dict[str, Any]:
    """Whether TensorRT subgraphs (legacy programs) and PIR-TensorRT (``.json`` programs) can be used, and why not."""
    compiled = paddle.get("trt_compile") or [0, 0, 0]
    runtime = paddle.get("trt_runtime") or [0, 0, 0]
    status: dict[str, Any] = {"compile_version": ".".join(map(str, compiled)),
                              "runtime_version": ".".join(map(str, runtime)),
                              "python_version": paddle.get("trt_python", "")}
    if not any(compiled):
        status["subgraph"] = status["pir"] = False
        status["reason"] = ("this Paddle build has no TensorRT (paddle.inference.get_trt_compile_version() =="
                            " (0, 0, 0)); install a paddlepaddle-gpu wheel built with TensorRT")
        return status
    if not any(runtime):
        status["subgraph"] = status["pir"] = False
        error = paddle.get("trt_runtime_error", "get_trt_runtime_version() == (0, 0, 0)")
        status["reason"] = (f"Paddle was built with TensorRT {status['compile_version']} but cannot load the TensorRT"
                            f" runtime (libnvinfer): {error}; {FIX_TRT}")
        return status
    status["subgraph"] = True
    status["pir"] = bool(paddle.get("trt_python"))
    if not status["pir"]:
        status["reason"] = ("PIR-TensorRT (needed for .json programs) requires the `tensorrt` Python package:"
                            f" {paddle.get('trt_python_error', 'not importable')};"
                            f" pip install tensorrt=={status['compile_version']}")
    return status


def devices_from(nvml_probe: ProbeResult | dict, paddle_probe: ProbeResult | dict,
                 cuda_visible: str | None = None) -> list[Device]:
    """Turn the two probe answers into devices: one per visible GPU, or one unavailable ``gpu`` saying why."""
    nvml, nvml_error = _probe_value(nvml_probe)
    paddle, paddle_error = _probe_value(paddle_probe)
    problems: list[str] = []  # apply to every GPU (Paddle build, wheel)
    versions: dict[str, str] = {}
    trt: dict[str, Any] = {"subgraph": False, "pir": False, "reason": "Paddle could not be probed"}

    if paddle is None:
        problems.append(f"cannot import Paddle in a probe process ({paddle_error}); {fix_wheel()}")
    else:
        versions["paddlepaddle"] = paddle.get("version", "")
        if not paddle.get("cuda_build"):
            trt = {"subgraph": False, "pir": False, "reason": "Paddle is not a CUDA build, so it has no TensorRT"}
            what = "a ROCm build" if paddle.get("rocm_build") else "a CPU-only wheel"
            problems.append(f"the installed Paddle {paddle.get('version', '')} is {what}"
                            f" (paddle.is_compiled_with_cuda() == False): {fix_wheel(paddle.get('version', ''))}")
        else:
            versions.update({k: v for k, v in (("paddle_cuda", paddle.get("cuda", "")),
                                               ("cudnn", paddle.get("cudnn", ""))) if v})
            trt = tensorrt_status(paddle)
            if trt["subgraph"]:
                versions["tensorrt"] = trt["runtime_version"]
        if not _paddle_supported(paddle.get("version", "")):
            low, high = (".".join(map(str, v)) for v in SUPPORTED_PADDLE)
            problems.append(f"paddle {paddle.get('version')} is outside the versions this plugin supports"
                            f" ({low} <= paddle < {high})")

    def absent(reason: str, **details: Any) -> list[Device]:
        return [Device(KIND, 0, name="NVIDIA GPU", backend=BACKEND, available=False, priority=PRIORITY,
                       reason=reason, versions=dict(versions), details={**details, "tensorrt": trt})]

    if nvml is None:
        return absent(f"cannot query the NVIDIA driver: {nvml_error}" + "".join(f"; {p}" for p in problems))
    if not nvml.get("ok"):
        kind = nvml.get("kind")
        if kind == "no-library":
            why = f"no NVIDIA driver: NVML (libnvidia-ml.so.1) not found ({nvml.get('error')}); {FIX_DRIVER}"
        elif kind == "driver-not-loaded":
            why = (f"the NVIDIA kernel driver is not loaded ({nvml.get('error')}); load it (modprobe nvidia) or"
                   f" reinstall the driver")
        elif kind == "no-binding":
            why = f"{nvml.get('error')}; pip install nvidia-ml-py"
        else:
            why = f"NVML failed: {nvml.get('error')} ({kind})"
        return absent(why + "".join(f"; also: {p}" for p in problems), nvml_error=nvml.get("kind"))

    versions["driver"] = nvml.get("driver", "")
    if nvml.get("cuda_driver"):
        versions["cuda_driver"] = nvml["cuda_driver"]
    gpus, visibility_note = visible_gpus(nvml.get("gpus") or [], cuda_visible)
    if not gpus:
        why = "no NVIDIA GPU found by NVML" if not nvml.get("gpus") else visibility_note
        return absent(why + "".join(f"; also: {p}" for p in problems))

    if paddle is not None and paddle.get("cuda_build"):
        wheel_cuda, driver_cuda = paddle.get("cuda", ""), nvml.get("cuda_driver", "")
        if wheel_cuda and driver_cuda and not _version_at_least(driver_cuda, wheel_cuda):
            problems.append(f"the driver {nvml.get('driver')} supports CUDA up to {driver_cuda} but Paddle is built for"
                            f" CUDA {wheel_cuda}: upgrade the NVIDIA driver or install the paddlepaddle-gpu wheel for"
                            f" CUDA <= {driver_cuda}")
    seen_by_paddle = None
    if paddle is not None and paddle.get("cuda_build") and not problems:
        seen_by_paddle = int(paddle.get("device_count", 0))

    found = []
    for ordinal, gpu in enumerate(gpus):
        reasons = list(problems)
        if seen_by_paddle is not None and ordinal >= seen_by_paddle:
            reasons.append(f"Paddle's CUDA runtime sees {seen_by_paddle} device(s), NVML {len(gpus)}"
                           + (f" ({paddle.get('device_error')})" if paddle.get("device_error") else "")
                           + ": check the driver/CUDA versions and CUDA_VISIBLE_DEVICES")
        details: dict[str, Any] = {k: gpu[k] for k in ("uuid", "pci_bus_id", "nvml_index", "compute_capability",
                                                      "memory_used", "utilization_gpu", "utilization_memory")
                                   if k in gpu}
        details["tensorrt"] = trt
        if visibility_note:
            details["visibility"] = visibility_note
        props = (paddle or {}).get("devices") or []
        if ordinal < len(props) and props[ordinal].get("name") not in (None, gpu.get("name")):
            # CUDA orders GPUs fastest-first unless CUDA_DEVICE_ORDER=PCI_BUS_ID; NVML by PCI bus.
            details["warning"] = (f"CUDA device {ordinal} is {props[ordinal].get('name')!r} but NVML lists"
                                  f" {gpu.get('name')!r}: set CUDA_DEVICE_ORDER=PCI_BUS_ID")
        found.append(Device(KIND, ordinal, name=gpu.get("name", "NVIDIA GPU"), backend=BACKEND,
                            available=not reasons, reason="; ".join(reasons), priority=PRIORITY,
                            memory_bytes=gpu.get("memory_total"), versions=dict(versions), details=details))
    return found


def fingerprint(device: Device) -> dict[str, str]:
    """What a serialized TensorRT engine depends on: GPU model, compute capability, TensorRT/CUDA/Paddle versions."""
    trt = device.details.get("tensorrt") or {}
    return {"gpu": device.name, "compute_capability": str(device.details.get("compute_capability", "")),
            "tensorrt": str(trt.get("runtime_version", "")), "cuda": device.versions.get("paddle_cuda", ""),
            "paddlepaddle": device.versions.get("paddlepaddle", "")}
