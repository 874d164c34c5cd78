"""Functions that run in a child process (through :func:`hwdeploy.sdk.isolation.run_probe`).

Each touches something that can crash, hang or take seconds: the NVIDIA
driver (NVML), ``import paddle`` (a CUDA build initialises CUDA), TensorRT
engine builds. They return plain JSON-able values; the calling process never
imports pynvml, Paddle or TensorRT for discovery.
"""

from __future__ import annotations

import os
from typing import Any


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _nvml_error_kind(pynvml, exc: Exception) -> str:
    for kind, name in (("no-library", "NVMLError_LibraryNotFound"),
                       ("driver-not-loaded", "NVMLError_DriverNotLoaded"),
                       ("no-permission", "NVMLError_NoPermission"),
                       ("driver-mismatch", "NVMLError_LibRmVersionMismatch")):
        cls = getattr(pynvml, name, None)
        if cls is not None and isinstance(exc, cls):
            return kind
    return "error"


def nvml_info() -> dict[str, Any]:
    """What NVML (the driver's management library) reports: driver, CUDA driver API version, every GPU."""
    try:
        import pynvml
    except ImportError as exc:
        return {"ok": False, "kind": "no-binding", "error": f"cannot import pynvml ({exc})"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"ok": False, "kind": _nvml_error_kind(pynvml, exc), "error": str(exc)}
    try:
        info: dict[str, Any] = {"ok": True, "driver": _text(pynvml.nvmlSystemGetDriverVersion())}
        try:
            cuda = int(pynvml.nvmlSystemGetCudaDriverVersion())  # e.g. 12040 for 12.4
            info["cuda_driver"] = f"{cuda // 1000}.{cuda % 1000 // 10}"
        except pynvml.NVMLError:
            info["cuda_driver"] = ""
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpu: dict[str, Any] = {"nvml_index": index}
            # Each query may be unsupported on some boards (MIG, vGPU): keep what works.
            queries = {
                "name": lambda: _text(pynvml.nvmlDeviceGetName(handle)),
                "uuid": lambda: _text(pynvml.nvmlDeviceGetUUID(handle)),
                "pci_bus_id": lambda: _text(pynvml.nvmlDeviceGetPciInfo(handle).busId),
                "memory": lambda: pynvml.nvmlDeviceGetMemoryInfo(handle),
                "compute_capability": lambda: ".".join(map(str, pynvml.nvmlDeviceGetCudaComputeCapability(handle))),
                "utilization": lambda: pynvml.nvmlDeviceGetUtilizationRates(handle),
            }
            for key, query in queries.items():
                try:
                    value = query()
                except pynvml.NVMLError as exc:
                    gpu.setdefault("errors", {})[key] = str(exc)
                    continue
                if key == "memory":
                    gpu["memory_total"], gpu["memory_used"] = int(value.total), int(value.used)
                elif key == "utilization":
                    gpu["utilization_gpu"], gpu["utilization_memory"] = int(value.gpu), int(value.memory)
                else:
                    gpu[key] = value
            gpus.append(gpu)
        info["gpus"] = gpus
        return info
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _version_tuple(value: Any) -> list[int]:
    try:
        return [int(x) for x in value]
    except (TypeError, ValueError):
        return [0, 0, 0]


def paddle_info() -> dict[str, Any]:
    """What the installed Paddle was built with: CUDA or not, cuDNN, TensorRT, and the GPUs its CUDA runtime sees."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    import paddle
    import paddle.inference as inference

    version = paddle.version

    def call(name: str) -> Any:
        attr = getattr(version, name, None)
        value = attr() if callable(attr) else attr
        return "" if value in (None, False, "False", "None") else str(value)

    info: dict[str, Any] = {
        "version": paddle.__version__,
        "cuda_build": bool(paddle.is_compiled_with_cuda()),
        "rocm_build": bool(paddle.is_compiled_with_rocm()),
        "cuda": call("cuda"),
        "cudnn": call("cudnn"),
        "trt_compile": _version_tuple(inference.get_trt_compile_version()),
    }
    try:
        info["trt_runtime"] = _version_tuple(inference.get_trt_runtime_version())
    except Exception as exc:  # a TensorRT build whose libnvinfer cannot be loaded
        info["trt_runtime"], info["trt_runtime_error"] = [0, 0, 0], f"{type(exc).__name__}: {exc}"
    archs = getattr(version, "cuda_archs", None)
    try:
        info["cuda_archs"] = [str(a) for a in (archs() if callable(archs) else archs or [])]
    except Exception:
        info["cuda_archs"] = []
    # PIR-TensorRT (paddle.tensorrt.convert) also needs the ``tensorrt`` Python package.
    try:
        import tensorrt

        info["trt_python"] = str(tensorrt.__version__)
    except Exception as exc:
        info["trt_python"], info["trt_python_error"] = "", f"{type(exc).__name__}: {exc}"
    info["config_methods"] = sorted(m for m in dir(inference.Config) if not m.startswith("_"))
    if info["cuda_build"]:
        try:
            count = int(paddle.device.cuda.device_count())
            info["device_count"] = count
            props = []
            for index in range(count):
                p = paddle.device.cuda.get_device_properties(index)
                props.append({"name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                              "memory_total": int(p.total_memory)})
            info["devices"] = props
        except Exception as exc:
            info.setdefault("device_count", 0)
            info["device_error"] = f"{type(exc).__name__}: {exc}"
    return info


# ---------------------------------------------------------------- engine builds (GPU machines only)


def _load_samples(path: str) -> list[list[Any]]:
    import numpy as np

    with np.load(path) as data:
        batches = sorted({int(k.split("_")[0][1:]) for k in data.files})
        return [[data[k] for k in sorted((k for k in data.files if k.startswith(f"b{b}_")),
                                         key=lambda k: int(k.split("_")[1]))] for b in batches]


def convert_pir_trt(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``paddle.tensorrt.convert`` (PIR-TensorRT) for one model; the GPU is CUDA device 0 of this process.

    ``spec`` is JSON: model prefix, output prefix, precision, TensorRT
    settings and either explicit min/opt/max shapes per input or an ``.npz``
    of sample batches (Paddle then collects the shape ranges itself).
    """
    os.environ.setdefault("GLOG_minloglevel", "2")
    import inspect

    import paddle
    from paddle.tensorrt.export import Input, PrecisionMode, TensorRTConfig, convert

    input_params = inspect.signature(Input.__init__).parameters
    if spec.get("samples"):
        if "warmup_data" not in input_params:
            raise RuntimeError("this Paddle's paddle.tensorrt.Input has no warmup_data: pass explicit shapes instead")
        batches = _load_samples(spec["samples"])
        inputs = [Input(warmup_data=tuple(batch[i] for batch in batches), input_data_type=None,
                        **({"name": name} if "name" in input_params else {}))
                  for i, name in enumerate(spec["input_names"])]
    else:
        inputs = []
        for item in spec["shapes"]:
            kwargs = {"min_input_shape": tuple(item["min"]), "optim_input_shape": tuple(item["opt"]),
                      "max_input_shape": tuple(item["max"]), "input_data_type": item["dtype"]}
            if "name" in input_params:
                kwargs["name"] = item["name"]
            inputs.append(Input(**kwargs))
    config_params = inspect.signature(TensorRTConfig.__init__).parameters
    wanted = {"min_subgraph_size": spec["min_subgraph_size"], "save_model_dir": spec["output_prefix"],
              "precision_mode": getattr(PrecisionMode, spec["precision"].upper()),
              "workspace_size": spec["workspace_size"], "use_cuda_graph": spec["cuda_graph"]}
    if spec.get("disable_ops"):
        wanted["disable_ops"] = list(spec["disable_ops"])
    if spec.get("optimization_level") is not None:
        wanted["optimization_level"] = spec["optimization_level"]
    missing = [k for k in wanted if k not in config_params]
    if missing:
        raise RuntimeError(f"paddle {paddle.__version__}: paddle.tensorrt.TensorRTConfig has no {missing}")
    convert(spec["model_prefix"], TensorRTConfig(inputs=inputs, **wanted))
    return {"paddle": paddle.__version__}


def build_subgraph_engines(spec: dict[str, Any]) -> dict[str, Any]:
    """Build and serialize Paddle-TensorRT subgraph engines (legacy programs) into an optim cache dir.

    Creates the predictor exactly as :func:`hwdeploy_nvidia.predictor.create_gpu_predictor`
    would (same config code), runs the sample batches once, and reports what it built.
    """
    from hwdeploy.contract.records import Device
    from hwdeploy.contract.model import load_model
    from hwdeploy_nvidia.options import parse_options
    from hwdeploy_nvidia.predictor import create_gpu_predictor

    model = load_model(spec["model"])
    device = Device("gpu", 0, backend="paddle-inference-gpu", details=spec.get("details") or {})
    options = parse_options(spec["options"], model)
    predictor = create_gpu_predictor(model, device, options, engine_dir=spec["engine_dir"])
    try:
        for batch in _load_samples(spec["samples"]) if spec.get("samples") else []:
            predictor.run(*batch)
        receipt = predictor.receipt()
        return {"actual": receipt.actual, "evidence": receipt.evidence, "fallback": receipt.fallback_evidence,
                "engines": predictor.trt.engines}
    finally:
        predictor.close()
