"""The safety net for what validation cannot prove: a model's first load on a machine happens in a child process.

:mod:`hwdeploy.sdk.legacy_program` proves the structural facts Paddle's crashes need, but not everything a native
runtime does with a program (graph passes, kernel selection, shape inference). So the first time a legacy
program (by content hash) is loaded on this machine, :func:`check` loads it and runs it once with made-up inputs
(:func:`hwdeploy.sdk.inputs.random_inputs`) in a child process (:func:`hwdeploy.sdk.isolation.run_probe`):

- a child killed by a signal (SIGSEGV in ``VarDesc::Flush``...) or one that hangs past the timeout becomes
  :class:`~hwdeploy.errors.ModelFormatError` naming the file, the signal and the stage (``load`` or ``run``);
- a child that raises a Python error is not a crash: the same error then comes, typed, from the caller's own
  load or run;
- the verdict (ok, or the crash) is published with :func:`~hwdeploy.sdk.cache.write_verified_file`, keyed by
  model sha256 + Paddle version + the options that change Paddle's passes (oneDNN, IR optimisation), so later
  loads read one small hash-checked file (and, within a process, a dict). A hang is not cached: an overloaded
  machine must not condemn a model for good.

PIR programs skip the net: 310 PIR mutants of the outside campaign raised Python errors, none a signal.
``HWDEPLOY_SAFETY_NET=0`` switches it off; ``HWDEPLOY_SAFETY_NET_TIMEOUT`` (seconds, default 120) bounds the child.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from hwdeploy.errors import ModelFormatError

STAGES = ("import", "load", "run")
_verdicts: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get("HWDEPLOY_SAFETY_NET", "1").strip().lower() not in ("0", "false", "no", "off")


def _timeout() -> float:
    try:
        return max(1.0, float(os.environ.get("HWDEPLOY_SAFETY_NET_TIMEOUT", "120")))
    except ValueError:
        return 120.0


def verdict_key(model, onednn: bool, ir_optim: bool) -> str:
    from hwdeploy.sdk.cache import cache_key
    from hwdeploy.sdk.hostinfo import paddle_version

    return cache_key("safety-net/1", model.sha256, paddle_version(), bool(onednn), bool(ir_optim))


def verdict_path(key: str) -> Path:
    from hwdeploy.sdk.cache import cache_dir

    return cache_dir("safety-net") / f"{key}.json"


def check(model, *, onednn: bool = True, ir_optim: bool = True) -> dict[str, Any]:
    """Make sure ``model`` has been loaded and run once on this machine without killing a process.

    Returns the verdict (``{"ok": True, ...}``); raises :class:`ModelFormatError` for a crash or a hang, now or
    as cached from an earlier process. Warm calls cost a dict look-up (same process) or one small file read.
    """
    if not enabled() or model.format != "legacy":
        return {"ok": True, "skipped": True}
    memo = (model.sha256, bool(onednn), bool(ir_optim))  # the Paddle version does not change in a process
    with _lock:
        verdict = _verdicts.get(memo)
    if verdict is None:
        from hwdeploy.sdk.cache import read_verified_file

        key = verdict_key(model, onednn, ir_optim)

        text = read_verified_file(verdict_path(key))
        try:
            verdict = json.loads(text) if text is not None else None
        except ValueError:
            verdict = None
        if not isinstance(verdict, dict) or "ok" not in verdict:
            verdict = _probe(model, onednn, ir_optim, key)
        with _lock:
            _verdicts[memo] = verdict
    if not verdict["ok"]:
        raise ModelFormatError(f"{model.program}: {verdict['error']}", model.program)
    return verdict


def _probe(model, onednn: bool, ir_optim: bool, key: str) -> dict[str, Any]:
    from hwdeploy.sdk.cache import write_verified_file
    from hwdeploy.sdk.isolation import describe_exit, run_probe

    with tempfile.TemporaryDirectory(prefix="hwdeploy-net-") as tmp:
        stage_file = Path(tmp) / "stage"
        target = os.environ.get("HWDEPLOY_SAFETY_NET_CHILD") or "hwdeploy.sdk.safety_net:child"  # tests swap it
        result = run_probe(target, [str(model.program), str(model.params or ""), bool(onednn), bool(ir_optim),
                                    str(stage_file)], timeout=_timeout())
        try:
            stage = stage_file.read_text().strip() or "import"
        except OSError:
            stage = "import"
    if result.ok:
        verdict = {"ok": True, "seconds": round(result.seconds, 3), **(result.value or {})}
    elif result.timed_out:
        verdict = {"ok": False, "error": f"the first load of this model in a child process hung at stage {stage!r}"
                                         f" (no answer in {_timeout():g}s); refusing to load it here",
                   "stage": stage, "timed_out": True}
        return verdict  # not cached: a loaded machine must not condemn a model for good
    elif result.crashed:
        verdict = {"ok": False, "stage": stage, "returncode": result.returncode,
                   "error": f"Paddle {describe_exit(result.returncode)} at stage {stage!r} when a child process"
                            f" first loaded this model (a program Paddle cannot handle); refusing to load it here"}
    else:  # the child exited without a result for another reason (exit status, interpreter failure)
        verdict = {"ok": False, "stage": stage, "returncode": result.returncode,
                   "error": f"the first load of this model in a child process failed at stage {stage!r}:"
                            f" {result.error[:300]}"}
    write_verified_file(verdict_path(key), json.dumps(verdict))
    return verdict


def child(program: str, params: str, onednn: bool, ir_optim: bool, stage_file: str) -> dict[str, Any]:
    """In the child: load with Paddle Inference, run once on made-up inputs. Python errors are reported, not
    raised (they are not crashes); a signal kills this process and the parent reads the stage from the file."""
    def stage(name: str) -> None:
        with open(stage_file, "w") as fh:
            fh.write(name)

    stage("import")
    from hwdeploy.contract.model import Model
    from hwdeploy.sdk import legacy_program
    from hwdeploy.sdk.inputs import random_inputs

    model = Model(Path(program), Path(params) if params else None, "legacy")
    import paddle.inference as inference  # not via sdk.paddle_inference, which imports this module

    stage("load")
    try:  # the config sdk.paddle_inference.make_config builds for a legacy program, without the optim cache
        config = inference.Config(program, params)
        config.disable_glog_info()
        config.switch_ir_optim(ir_optim)
        config.set_cpu_math_library_num_threads(1)
        config.enable_onednn() if onednn else config.disable_onednn()
        config.enable_memory_optim()
        predictor = inference.create_predictor(config)
    except Exception as exc:  # noqa: BLE001 - a Python error is the caller's typed error later, not a crash
        return {"stage": "load", "python_error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    stage("run")
    try:
        from hwdeploy.contract.records import TensorSpec

        info = legacy_program.validate_legacy_program(model.program)
        block = info.message.blocks[0]
        types = {v.name: v.type.dense_tensor.tensor for v in block.vars if v.type.type == legacy_program.DENSE_TENSOR}
        specs = [TensorSpec(name, tuple(types[name].dims) if name in types else (-1,),
                            legacy_program._TENSOR_DTYPES.get(types[name].data_type, "float32") if name in types
                            else "float32") for name in info.feeds]
        for spec, array in zip(specs, random_inputs(specs, batch=1)):
            predictor.get_input_handle(spec.name).copy_from_cpu(array)
        predictor.run()
        for name in predictor.get_output_names():
            predictor.get_output_handle(name).copy_to_cpu()
    except Exception as exc:  # noqa: BLE001
        return {"stage": "run", "python_error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    stage("done")
    return {"stage": "done"}
