"""hwdeploy hooks of the NVIDIA plugin (entry point ``nvidia``).

Importing this module is cheap: no Paddle, no NVML, no TensorRT. Discovery
runs its probes in child processes; Paddle is imported when a predictor is built.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from hwdeploy import ConversionTarget, Device, hookimpl
from hwdeploy.sdk.cache import cache_dir
from hwdeploy.errors import BackendError, ConversionError, FallbackError, HwdeployError
from hwdeploy.sdk.isolation import run_probe
from hwdeploy.contract.records import Artifact

from hwdeploy_nvidia.discovery import BACKEND, KIND, discover, fingerprint

TARGET = "tensorrt"


def _convert_options():
    """The options ``hwdeploy convert --target tensorrt`` accepts (all JSON-able, so they key the cache exactly)."""
    from hwdeploy.sdk.options import Option, OptionSchema
    from hwdeploy_nvidia.options import OPTIONS

    built = ("precision", "shapes", "max_batch_size", "min_subgraph_size", "workspace_size", "disable_ops",
             "optimization_level", "cuda_graph", "build_timeout")
    return OptionSchema("tensorrt conversion", [OPTIONS.options[name] for name in built] + [
        Option("device", str, KIND, "the GPU whose engines are built (gpu or gpu:N)", nullable=False)])


@hookimpl
def hwdeploy_option_schemas():
    from hwdeploy_nvidia.options import OPTIONS

    return [OPTIONS, _convert_options()]


@hookimpl
def hwdeploy_discover_devices() -> list[Device]:
    return discover()


@hookimpl
def hwdeploy_create_predictor(model, device: Device, options: dict[str, Any]):
    if device.kind != KIND or device.backend != BACKEND:
        return None
    from hwdeploy_nvidia.predictor import create_gpu_predictor

    predictor = create_gpu_predictor(model, device, options)
    if not predictor.config.use_gpu():
        # Whatever the fallback policy: a "GPU" predictor with no GPU at all is never handed out.
        receipt = predictor.receipt()
        predictor.close()
        raise FallbackError(f"refusing a {device.id} predictor that Paddle runs on {receipt.actual}: "
                            + "; ".join(receipt.fallback_evidence or receipt.fallback_reasons()), receipt)
    return predictor


@hookimpl
def hwdeploy_utilization_sampler(device: Device):
    if device.kind != KIND or device.backend != BACKEND:
        return None
    from hwdeploy_nvidia.sampler import NvmlSampler

    return NvmlSampler(device)


@hookimpl
def hwdeploy_conversion_targets() -> list[ConversionTarget]:
    return [ConversionTarget(TARGET, "TensorRT engines built ahead of time for given shapes (PIR-TensorRT program,"
                                     " or Paddle-TRT subgraph engines for .pdmodel programs)", device_kinds=(KIND,))]


@hookimpl
def hwdeploy_convert_model(model, target: str, options: dict[str, Any], output_dir: Path):
    if target != TARGET:
        return None
    return convert_tensorrt(model, options, Path(output_dir))


def _gpu_for(spec: str) -> Device:
    import hwdeploy
    from hwdeploy.contract.records import DeviceSpec

    wanted = DeviceSpec.parse(spec)
    if wanted.kind != KIND:
        raise ConversionError(f"tensorrt: device must be a gpu ('gpu' or 'gpu:N'), got {spec!r}")
    gpus = [d for d in hwdeploy.devices() if d.kind == KIND and d.backend == BACKEND]
    usable = [d for d in gpus if d.available and wanted.matches(d)]
    if usable:
        return usable[0]
    why = "; ".join(f"{d.id}: {d.reason}" for d in gpus if wanted.matches(d) or wanted.index is None) or \
        f"no {spec} (GPUs: {[d.id for d in gpus]})"
    raise ConversionError(f"cannot build TensorRT engines on this machine: {why}")


def _sample(shape, dtype: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind in "iu":
        return rng.integers(1, 10, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype or "float32")


def convert_tensorrt(model, options: dict[str, Any], output_dir: Path) -> Artifact:
    """Build TensorRT engines for ``model`` ahead of time and describe them in an :class:`Artifact`.

    The engines live in hwdeploy's cache (``nvidia/pir-trt`` or ``nvidia/subgraph``),
    keyed exactly as a later ``hwdeploy.predictor(model, device="gpu", **same options)``
    looks them up, so that predictor starts without building anything.
    """
    from hwdeploy_nvidia import engines
    from hwdeploy_nvidia.options import input_specs, parse_options, static_shape_ranges
    from hwdeploy_nvidia.programs import engine_files, trt_summary

    _convert_options().check(options)
    trt_options = {k: v for k, v in options.items() if k != "device"}
    opts = parse_options({**trt_options, "tensorrt": True}, model, owner="tensorrt conversion")
    device = _gpu_for(str(options.get("device", KIND)))
    path = "subgraph" if model.format == "legacy" else "pir"
    status = device.details.get("tensorrt") or {}
    if not status.get(path):
        raise ConversionError(f"cannot build TensorRT engines on {device.id}:"
                              f" {status.get('reason', 'TensorRT unusable')}")
    metadata: dict[str, Any] = {"device": device.id, "fingerprint": fingerprint(device), "options": opts.describe(),
                                "format": model.format}
    try:
        if model.format == "pir":
            built = engines.ensure_pir_trt(model, opts, device)
            for name in ("model.json", "model.pdiparams"):
                shutil.copy2(built / name, output_dir / name)
            summary = trt_summary(built / "model.json")
            metadata.update(engine_dir=str(built), engines=summary["engines"], outside_tensorrt=summary["outside"],
                            engine_files=engine_files(built / "model.json"))
            files = ["model.json", "model.pdiparams"]
        else:
            optim_dir = cache_dir("nvidia", "subgraph", engines.engine_key(model, opts, device, "subgraph"))
            specs = input_specs(model) or []
            ranges = opts.shapes or (static_shape_ranges(specs, opts.max_batch_size) if specs else {})
            samples = optim_dir.parent / f".{optim_dir.name}.samples.npz"
            # One batch per profile corner, so every engine a run can need exists.
            engines.save_batches(samples, [[_sample(ranges[s.name][i], s.dtype, i) for s in specs]
                                           for i in range(3)] if ranges else [])
            job = {"model": str(model.program), "options": trt_options, "engine_dir": str(optim_dir),
                   "samples": str(samples) if ranges else None, "details": device.details}
            result = run_probe("hwdeploy_nvidia.probes:build_subgraph_engines", [job], timeout=opts.build_timeout,
                               env={"CUDA_VISIBLE_DEVICES": engines.visible_id(device)})
            samples.unlink(missing_ok=True)
            if not result.ok:
                raise ConversionError(f"building TensorRT subgraph engines failed: {result.error}\n"
                                      + "\n".join(result.stderr_tail.splitlines()[-15:]))
            if result.value.get("actual") != "gpu:0" or result.value.get("fallback"):
                raise ConversionError(f"engine build did not run on the GPU: {result.value}")
            metadata.update(engine_dir=str(optim_dir), engines=result.value.get("engines"),
                            evidence=result.value.get("evidence"))
            (output_dir / "tensorrt.json").write_text(json.dumps(metadata, indent=1, default=str))
            files = ["tensorrt.json"]
    except BackendError as exc:  # the engine build failed (in its child process): a conversion error
        raise ConversionError(f"tensorrt: {exc}") from exc
    except HwdeployError:
        raise
    except ValueError as exc:
        raise ConversionError(f"tensorrt: {exc}") from None
    if not metadata.get("engines"):
        raise ConversionError(f"TensorRT built 0 engines for {model.name}: no op of it went into TensorRT"
                              f" (try a smaller min_subgraph_size, or check disable_ops)")
    return Artifact(TARGET, output_dir, files, metadata)
