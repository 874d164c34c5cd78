"""Building TensorRT engines and the files they need, cached in hwdeploy's cache dir.

- Legacy (``.pdmodel``) programs: Paddle-TensorRT subgraphs inside Paddle
  Inference. The tuned dynamic-shape flow is two passes: a collection run
  (``collect_shape_range_info``) on sample inputs writes a shape-range file,
  then the real predictor uses it (``enable_tuned_tensorrt_dynamic_shape``).
  INT8 calibration is two passes too: a calibration run writes the table into
  the optim cache dir, the next predictor builds INT8 engines from it.
- PIR (``.json``) programs: Paddle 3's Inference passes ignore
  ``enable_tensorrt_engine`` for PIR programs, so engines are built ahead of
  time with PIR-TensorRT (``paddle.tensorrt.convert``) in a child process; the
  converted program carries ``pd_op.tensorrt_engine`` ops and loads like any model.

Every directory is keyed by model hash + options + the device fingerprint
(GPU model, compute capability, TensorRT/CUDA/Paddle versions): an engine
built for one GPU or TensorRT version is never served to another.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from hwdeploy.sdk.cache import build_once, cache_dir, cache_key
from hwdeploy.contract.records import Device
from hwdeploy.errors import BackendError
from hwdeploy.sdk.isolation import run_probe
from hwdeploy.contract.model import Model
from hwdeploy.sdk import paddle_inference as pi

from hwdeploy_nvidia.config import build_config
from hwdeploy_nvidia.discovery import fingerprint
from hwdeploy_nvidia.options import GpuOptions, digest_batches, input_specs, static_shape_ranges

log = logging.getLogger("hwdeploy.nvidia")
SHAPE_FILE = "shape_range_info.pbtxt"


def engine_key(model: Model, opts: GpuOptions, device: Device, kind: str) -> str:
    return cache_key(kind, model.sha256, opts.key(), fingerprint(device))


def visible_id(device: Device) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value that makes ``device`` CUDA device 0 of a child process."""
    uuid = device.details.get("uuid")
    if uuid:
        return str(uuid)
    parent = os.environ.get("CUDA_VISIBLE_DEVICES")
    if parent is not None:
        tokens = [t.strip() for t in parent.split(",") if t.strip()]
        if device.index < len(tokens):
            return tokens[device.index]
    return str(device.index)


def save_batches(path: Path, batches: list[list[np.ndarray]]) -> None:
    np.savez(path, **{f"b{b}_{i}": a for b, batch in enumerate(batches) for i, a in enumerate(batch)})


def _run_batches(predictor, batches: list[list[np.ndarray]]) -> None:
    names = predictor.get_input_names()
    for batch in batches:
        for name, array in zip(names, batch):
            predictor.get_input_handle(name).copy_from_cpu(array)
        predictor.run()


def _refuse_unless_gpu(report, what: str) -> None:
    if report.refused:
        raise BackendError(f"{what}: Paddle refused " + "; ".join(f"{m}(): {e}" for m, e in report.refused.items()))
    if report.fallback:
        raise BackendError(f"{what} refused, it would not run on the GPU: " + "; ".join(report.fallback))


def collect_shape_ranges(model: Model, opts: GpuOptions, device: Device) -> Path:
    """Pass 1 of the tuned flow: run ``opts.sample_inputs`` on the GPU recording every tensor's shape range."""
    key = cache_key("shapes", model.sha256, digest_batches(opts.sample_inputs), pi.paddle_version())
    final = cache_dir("nvidia", "shapes") / key

    def build(tmp: Path) -> None:
        config, report = build_config(model, opts, device.index, tensorrt=False, stage="collect",
                                      shape_file=tmp / SHAPE_FILE)
        _refuse_unless_gpu(report, "shape-range collection")
        predictor = pi.create_paddle_predictor(config)
        _run_batches(predictor, opts.sample_inputs)
        del predictor  # Paddle writes the shape-range file when the predictor is destroyed
        if not (tmp / SHAPE_FILE).is_file():
            raise BackendError(f"Paddle collected no shape ranges into {tmp / SHAPE_FILE}")

    build_once(final, build)
    return final / SHAPE_FILE


def parse_shape_range_file(path: Path) -> dict[str, dict[str, list[int]]]:
    """Read Paddle's ``shape_range_info.pbtxt`` (text protobuf) into ``{tensor: {min_shape, max_shape, opt_shape}}``."""
    out: dict[str, dict[str, list[int]]] = {}
    current: dict[str, list[int]] | None = None
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("shape_range_info"):
            current = {}
        elif line.startswith("name:") and current is not None:
            out[line.split(":", 1)[1].strip().strip('"')] = current
        elif ":" in line and current is not None:
            key, value = (p.strip() for p in line.split(":", 1))
            if value.lstrip("-").isdigit():
                current.setdefault(key, []).append(int(value))
    return out


def _opt_files(optim_dir: Path, prefix: str) -> list[Path]:
    """Files Paddle-TRT wrote: into the optim cache dir itself when one is set, ``_opt_cache/`` otherwise."""
    found = []
    for folder in (Path(optim_dir), Path(optim_dir) / "_opt_cache"):
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.name.startswith(prefix) and p.is_file()]
    return found


def has_calibration_table(optim_dir: Path) -> bool:
    return bool(_opt_files(optim_dir, "trt_calib_"))


def calibrate_int8(model: Model, opts: GpuOptions, device: Device, optim_dir: Path, shape_file: Path | None,
                   shape_ranges) -> None:
    """Pass 1 of INT8 calibration: run ``opts.calibration_inputs``; Paddle writes the table on destruction."""
    if has_calibration_table(optim_dir):
        return
    config, report = build_config(model, opts, device.index, tensorrt=True, optim_dir=optim_dir,
                                  shape_file=shape_file, shape_ranges=shape_ranges, calibrate=True)
    _refuse_unless_gpu(report, "INT8 calibration")
    predictor = pi.create_paddle_predictor(config)
    _run_batches(predictor, opts.calibration_inputs)
    del predictor
    if not has_calibration_table(optim_dir):
        raise BackendError(f"INT8 calibration ran {len(opts.calibration_inputs)} batch(es) but Paddle wrote no"
                           f" calibration table (trt_calib_*) under {optim_dir}")


def count_subgraph_engines(optim_dir: Path | None) -> int | None:
    """Serialized Paddle-TensorRT engines (``trt_serialized_<key>``, ``use_static``); None when unknowable."""
    if optim_dir is None:
        return None
    return len(_opt_files(optim_dir, "trt_serialized_"))


def pir_trt_spec(model: Model, opts: GpuOptions, workdir: Path) -> dict[str, Any]:
    """The JSON job for :func:`hwdeploy_nvidia.probes.convert_pir_trt`."""
    specs = input_specs(model) or []
    spec: dict[str, Any] = {"model_prefix": str(model.prefix), "precision": opts.precision,
                            "min_subgraph_size": opts.min_subgraph_size, "workspace_size": opts.workspace_size,
                            "disable_ops": list(opts.disable_ops), "optimization_level": opts.optimization_level,
                            "cuda_graph": opts.cuda_graph, "input_names": [s.name for s in specs]}
    if opts.shape_mode == "tuned":
        samples = workdir / "samples.npz"
        save_batches(samples, opts.sample_inputs)
        spec["samples"] = str(samples)
    else:
        ranges = opts.shapes or static_shape_ranges(specs, opts.max_batch_size)
        by_name = {s.name: s for s in specs}
        spec["shapes"] = [{"name": name, "dtype": by_name[name].dtype if name in by_name else "float32",
                           "min": list(r[0]), "opt": list(r[1]), "max": list(r[2])}
                          for name, r in ((s.name, ranges.get(s.name)) for s in specs) if r is not None]
        missing = [s.name for s in specs if s.name not in ranges]
        if missing:
            raise ValueError(f"shapes gives no range for input(s) {missing}: PIR-TensorRT needs one per input")
    return spec


def ensure_pir_trt(model: Model, opts: GpuOptions, device: Device) -> Path:
    """Convert ``model`` with PIR-TensorRT for ``device`` (cached); returns the dir holding ``model.json``."""
    final = cache_dir("nvidia", "pir-trt") / engine_key(model, opts, device, "pir-trt")
    if not opts.engine_cache and final.exists():
        shutil.rmtree(final, ignore_errors=True)  # engine_cache=False: build afresh

    def build(tmp: Path) -> None:
        spec = pir_trt_spec(model, opts, tmp)
        spec["output_prefix"] = str(tmp / "model")
        log.info("hwdeploy nvidia: building TensorRT engines for %s (%s) on %s", model.name, opts.precision, device)
        result = run_probe("hwdeploy_nvidia.probes:convert_pir_trt", [spec], timeout=opts.build_timeout,
                           env={"CUDA_VISIBLE_DEVICES": visible_id(device)})
        if not result.ok:
            tail = "\n".join(result.stderr_tail.splitlines()[-15:])
            raise BackendError(f"PIR-TensorRT conversion of {model.name} failed: {result.error}\n{tail}")
        program = tmp / "model.json"
        if not program.is_file():
            raise BackendError(f"PIR-TensorRT conversion wrote no {program.name} into {tmp}")
        # Engine files are referenced by absolute path: point them at the final directory.
        program.write_text(program.read_text().replace(str(tmp), str(final)))

    build_once(final, build)
    return final
