"""hwdeploy plugin for NVIDIA GPUs: Paddle Inference on CUDA with TensorRT.

- Discovery (``hwdeploy devices``): NVML and Paddle's build are probed in child
  processes; a GPU that cannot be used is reported with what is missing and the fix.
- ``hwdeploy.predictor(model, device="gpu", precision="fp16", ...)``: see
  :class:`hwdeploy_nvidia.options.GpuOptions` for every option.
- ``hwdeploy.convert(model, "tensorrt", shapes=..., precision=...)``: engines
  built ahead of time and cached.
- :func:`create_gpu_predictor` builds a predictor without judging it, so its
  receipt can be inspected (e.g. the silent CPU fallback of a CPU-only wheel).

Importing this package does not import Paddle, NVML or TensorRT.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["create_gpu_predictor", "GpuOptions", "parse_options", "NvmlSampler"]


def __getattr__(name: str) -> Any:  # lazy: keep `import hwdeploy_nvidia` cheap
    if name == "create_gpu_predictor":
        from hwdeploy_nvidia.predictor import create_gpu_predictor

        return create_gpu_predictor
    if name in ("GpuOptions", "parse_options"):
        from hwdeploy_nvidia import options

        return getattr(options, name)
    if name == "NvmlSampler":
        from hwdeploy_nvidia.sampler import NvmlSampler

        return NvmlSampler
    raise AttributeError(f"module 'hwdeploy_nvidia' has no attribute {name!r}")
