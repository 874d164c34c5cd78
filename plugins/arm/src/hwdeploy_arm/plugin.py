"""hwdeploy hooks of the Paddle Lite plugin (entry point ``arm = "hwdeploy_arm.plugin"``).

Devices (backend ``paddle-lite``):

- ``arm``: an ARM CPU through Paddle Lite's ARM kernels (priority 10, above the CPU reference, so
  ``auto`` takes it on ARM boards). On ARM hosts Paddle Inference (aarch64 wheels up to 3.2.2) is
  a second engine for it; with ``engine="auto"`` (the default) both run the model a few times and
  the faster one is kept (the receipt says which and why). On x86 it is reported absent.
- ``cpu`` with backend ``paddle-lite`` (x86-64 hosts): this CPU through Paddle Lite's x86 kernels:
  the same worker, ``.nb`` and MobileConfig code path as ``arm``, runnable here. Like the other
  alternative CPU backends (ONNX Runtime, OpenVINO) it has priority -1: plain ``auto`` never
  prefers it over the Paddle Inference CPU reference (faster here, see
  benchmarks/test_bench_lite.py); ``auto:fastest`` measures it. Select it with
  ``hwdeploy.predictor(model, "cpu", backend="paddle-lite")``.

Conversion targets: ``arm``, ``x86``, ``opencl``, ``huawei_ascend_npu``, ``cambricon_mlu``
(:mod:`hwdeploy_arm.convert`). CLI: ``hwdeploy lite-setup``.
Importing this module is cheap: no Paddle, no Lite, no subprocess.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from typing import Any

from hwdeploy import hookimpl
from hwdeploy.contract.records import Device
from hwdeploy.errors import OptionError
from hwdeploy.contract.records import CliCommand
from hwdeploy.sdk.options import CHECK_FINITE, THREADS, Option, OptionSchema

BACKEND = "paddle-lite"
#: Device kind -> the Lite target (.nb kernels) it runs.
KINDS = {"arm": "arm", "cpu": "x86"}
PRIORITY = {"arm": 10, "cpu": -1}
ENGINES = ("auto", "paddle-lite", "paddle-inference")
#: MobileConfig power modes (ARM big.LITTLE scheduling; the x86 runtime has no such setting).
POWER_MODES = ("high", "low", "full", "no_bind", "rand_high", "rand_low")
OPTIONS = OptionSchema("paddle-lite backend", [
    dataclasses.replace(THREADS, default=1, nullable=False, description="Lite math threads"),
    Option("power_mode", str, None, "Lite's CPU power mode (big/little cores; ARM only)", choices=POWER_MODES),
    Option("timeout", (int, float), 300.0, "seconds one call into the Lite worker may take", minimum=0.001,
           maximum=86400, nullable=False),
    CHECK_FINITE,
    Option("engine", str, "auto", "auto (measure both on an ARM host, keep the faster), paddle-lite or"
           " paddle-inference", choices=ENGINES, nullable=False),
])
CONVERT_OPTIONS = OptionSchema("paddle-lite conversion", [
    Option("host", str, None, "NNAdapter targets: the CPU kernels beside the accelerator's", choices=("arm", "x86")),
])
PROBE_TTL = 3600.0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _probe_runtime(python: str):
    from hwdeploy.sdk.isolation import run_probe

    from hwdeploy_arm.env import ENV_VAR
    from hwdeploy_arm.worker import WORKER_SCRIPT

    return run_probe("_lite_worker:runtime_info", python=python, timeout=60, cache_ttl=PROBE_TTL,
                     cache_env=[ENV_VAR], env={"PYTHONPATH": str(WORKER_SCRIPT.parent), "PYTHONNOUSERSITE": "1"})


@hookimpl
def hwdeploy_discover_devices() -> list[Device]:
    from hwdeploy_arm.env import find_lite_python, missing_reason
    from hwdeploy_arm.predictor import host_kind

    machine = platform.machine()
    here = host_kind(machine)
    lite = find_lite_python()
    runtime, runtime_error = None, ""
    if here in KINDS.values() and lite:
        if not os.path.exists(lite.path):
            runtime_error = f"Paddle Lite interpreter {lite.path} ({lite.source}) does not exist"
        else:
            probe = _probe_runtime(lite.path)
            runtime = probe.value if probe.ok else None
            runtime_error = "" if probe.ok else f"Paddle Lite runtime {lite.path} does not work: {probe.error}"
    pi_version = ""
    if here == "arm":
        from hwdeploy.sdk.paddle_inference import paddle_version

        pi_version = paddle_version()
    found = []
    for kind, target in KINDS.items():
        # Paddle Lite's CPU kernels run on the host CPU (the ARM board's, or x86's): no accelerator signature.
        device = Device(kind, 0, name=f"{_cpu_name()} via Paddle Lite", backend=BACKEND, priority=PRIORITY[kind],
                        host_compute=True, details={"machine": machine, "lite_target": target, "lite_python": lite.path if lite else None,
                                 "lite_python_source": lite.source if lite else None})
        if target != here:
            device.available = False
            if target == "arm":
                device.reason = (f"this host is {machine}, not an ARM CPU: the arm device runs Paddle Lite's ARM"
                                 " kernels on an ARM board with a Paddle Lite Python runtime (no aarch64 paddlelite"
                                 " wheel on PyPI: build Paddle Lite with its Python API and set"
                                 " HWDEPLOY_LITE_PYTHON). ARM .nb files can still be built here:"
                                 " hwdeploy convert MODEL --target arm")
            else:
                device.reason = (f"Paddle Lite's x86 kernels need an x86-64 host (this is {machine}); on ARM the"
                                 " Paddle Lite device is arm:0")
        elif runtime is not None:
            device.versions = {"paddlelite": runtime.get("lite_version", ""), "lite_python": runtime.get("python", "")}
            device.details["runtime"] = runtime
            if kind == "arm" and pi_version:
                device.versions["paddlepaddle"] = pi_version
                device.details["engines"] = ["paddle-lite", "paddle-inference"]
        elif kind == "arm" and pi_version:
            # No Lite runtime, but Paddle Inference runs on this ARM CPU.
            device.versions = {"paddlepaddle": pi_version}
            device.details["engines"] = ["paddle-inference"]
            device.details["lite_missing"] = runtime_error or missing_reason()
        else:
            device.available = False
            device.reason = runtime_error or missing_reason()
        found.append(device)
    return found


@hookimpl
def hwdeploy_conversion_targets():
    from hwdeploy_arm.convert import TARGETS

    return list(TARGETS)


@hookimpl
def hwdeploy_option_schemas() -> list[OptionSchema]:
    return [OPTIONS, CONVERT_OPTIONS]


@hookimpl
def hwdeploy_convert_model(model, target: str, options: dict[str, Any], output_dir):
    from hwdeploy_arm.convert import TARGET_NAMES, convert_to_nb, valid_targets_for

    if target not in TARGET_NAMES:
        return None
    return convert_to_nb(model, valid_targets_for(target, options), output_dir)


def _lite_predictor(model, device: Device, settings: dict[str, Any]):
    import hwdeploy
    from hwdeploy.contract.model import TensorSpec

    from hwdeploy_arm.convert import NB_NAME
    from hwdeploy_arm.predictor import LitePredictor

    artifact = hwdeploy.convert(model, KINDS[device.kind])
    report = artifact.metadata
    specs = [[TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in report.get(key, [])]
             for key in ("inputs", "outputs")]
    return LitePredictor(artifact.path(NB_NAME), device, model=model, inputs=specs[0] or None,
                         outputs=specs[1] or None, threads=settings["threads"], power_mode=settings["power_mode"],
                         timeout=settings["timeout"], check_finite=settings["check_finite"], report=report)


def _inference_predictor(model, device: Device, settings: dict[str, Any], options: dict[str, Any],
                         notes: list[str] | None = None):
    from hwdeploy.sdk import paddle_inference as pi

    notes = notes if notes is not None else []
    config = pi.make_config(model, threads=settings["threads"], onednn=False)  # oneDNN is x86-only
    # On an ARM host the "cpu" Paddle Inference reports is this ARM CPU.
    return pi.PaddleInferencePredictor(
        model, device, config, backend="paddle-inference", check_finite=settings["check_finite"],
        actual_device=lambda c: device.id if not c.use_gpu() else pi.config_device(c),
        receipt_extra=lambda receipt: receipt.evidence.extend(notes), options=options)


@hookimpl
def hwdeploy_create_predictor(model, device: Device, options: dict[str, Any]):
    if device.kind not in KINDS or device.backend != BACKEND:
        return None
    settings = OPTIONS.check(options)
    engines = device.details.get("engines", ["paddle-lite"])
    engine = settings["engine"]
    if engine != "auto" and engine not in engines:
        raise OptionError(f"engine {engine!r} is not available on {device.id}; available: {engines}")
    if engine == "paddle-inference" or engines == ["paddle-inference"]:
        return _inference_predictor(model, device, settings, options)
    if engine == "paddle-lite" or len(engines) == 1:
        return _lite_predictor(model, device, settings)
    return choose_engine(model, device, settings, options)


def choose_engine(model, device: Device, settings: dict[str, Any], options: dict[str, Any]):
    """Build the model on both engines of an ARM host, keep the faster (measured on example inputs)."""
    from hwdeploy_arm.predictor import example_inputs, pick_faster

    notes: list[str] = []
    lite = _lite_predictor(model, device, settings)
    try:
        inference = _inference_predictor(model, device, settings, options, notes)
    except Exception:
        lite.close()
        raise
    winner, timings = pick_faster([lite, inference], example_inputs(lite.inputs, getattr(model, "metadata", None)))
    summary = ", ".join(f"{name} {seconds * 1e3:.2f} ms" for name, seconds in sorted(timings.items()))
    notes.append(f"engine {winner.backend} chosen by measurement on {device.id} (median of 5 runs): {summary}")
    lite.notes.extend(notes)
    return winner


# ----------------------------------------------------------------------------------- CLI

def _configure_setup(parser) -> None:
    parser.add_argument("--python", help="CPython <= 3.10 to build the environment from (default: discovered)")
    parser.add_argument("--force", action="store_true", help="rebuild the environment")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _run_setup(args) -> int:
    import json

    from hwdeploy.errors import HwdeployError

    from hwdeploy_arm.env import ENV_VAR, env_info, find_lite_python, managed_env_dir, setup_lite_env

    try:
        python = setup_lite_env(args.python, force=args.force,
                                log=None if args.json else (lambda m: print(f"lite-setup: {m}", flush=True)))
    except HwdeployError as exc:
        print(f"lite-setup failed: {exc}")
        return 1
    active = find_lite_python()
    result = {**env_info(), "interpreter": str(python), "env": str(managed_env_dir()),
              "active": active.path if active else None, "active_source": active.source if active else None}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"Paddle Lite {result.get('lite')} ready: {python} (Python {result.get('python')})")
        if active and active.path != str(python):
            print(f"note: ${ENV_VAR} selects {active.path} instead")
    return 0


def _configure_ops(parser) -> None:
    parser.add_argument("model", help="model path, prefix, directory or zoo:NAME")
    parser.add_argument("--target", required=True, help="arm, x86, opencl, huawei_ascend_npu or cambricon_mlu")
    parser.add_argument("--host", choices=("arm", "x86"), help="host CPU of an NNAdapter target")
    parser.add_argument("--json", action="store_true", help="print the whole conversion report as JSON")


def _run_ops(args) -> int:
    import json

    import hwdeploy
    from hwdeploy.errors import HwdeployError

    from hwdeploy_arm.convert import report_lines

    try:
        artifact = hwdeploy.convert(args.model, args.target, **({"host": args.host} if args.host else {}))
    except HwdeployError as exc:
        print(f"lite-ops: {exc}")
        return 1
    report = artifact.metadata
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for line in report_lines(report):
        print(line)
    columns = report["valid_targets"].split(",") + ["host"]
    print(f"{'op':32} " + " ".join(f"{c:>18}" for c in columns))
    for op, targets in report["model_ops"].items():
        print(f"{op:32} " + " ".join(f"{'Y' if c in targets else '-':>18}" for c in columns))
    print(f"model.nb: {artifact.path('model.nb')}")
    return 0


@hookimpl
def hwdeploy_cli_commands():
    return [CliCommand("lite-setup", "create the Paddle Lite (CPython <= 3.10 + paddlelite 2.13rc0) environment"
                       " the Paddle Lite devices (arm, cpu/paddle-lite) run in", _configure_setup, _run_setup),
            CliCommand("lite-ops", "convert for a Paddle Lite target and show which target runs each op"
                       " (opt's model check) and what falls back to the host CPU", _configure_ops, _run_ops)]
