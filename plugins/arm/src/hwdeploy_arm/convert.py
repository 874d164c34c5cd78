"""Paddle model -> legacy ProgramDesc (patched for Lite) -> Lite ``opt`` -> ``.nb``, with an ops report.

:func:`convert_to_nb` is the public entry point, also for other plugins whose hardware Paddle Lite
reaches through NNAdapter (Ascend, Cambricon): they pass their ``valid_targets`` and get an
:class:`~hwdeploy.Artifact` whose metadata says, per op, which target has a kernel and which ops
would fall back to the host CPU.

Steps:
1. the program: a legacy ``.pdmodel`` as is, or a PIR ``.json`` translated
   (:mod:`hwdeploy_arm.pir_to_legacy`); then the Lite patches (:mod:`hwdeploy_arm.program`);
2. opt's model check (``--print_model_ops``) for ``valid_targets``: op x target kernel table,
   and :class:`~hwdeploy.UnsupportedOpsError` naming every op no valid target can run;
3. opt itself (in the Lite worker) -> ``model.nb``, plus its graph dump (``graph/Block_N.dot``);
4. the report: kernels per op and target read from the ``.nb``, ops inside NNAdapter subgraphs,
   and the ops left on the host CPU (``host_fallback_ops``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from hwdeploy.errors import ConversionError, OptionError, UnsupportedOpsError
from hwdeploy.contract.model import Model, ModelLike, load_model
from hwdeploy.contract.records import Artifact, ConversionTarget

from hwdeploy_arm import nb as nbfile
from hwdeploy_arm import program as prog
from hwdeploy_arm.env import ensure_lite_python
from hwdeploy_arm.worker import LiteWorkerError, run_check, tool_worker

log = logging.getLogger("hwdeploy.lite")

NB_NAME = "model.nb"
PROGRAM_NAME = "lite_model.pdmodel"
REPORT_NAME = "lite_report.json"
#: NNAdapter device names as opt spells them, and the CPU each usually sits beside.
NNADAPTER_TARGETS = {"huawei_ascend_npu": "arm", "cambricon_mlu": "x86"}
CPU_TARGETS = ("arm", "x86")

TARGETS = [
    ConversionTarget("arm", "Paddle Lite .nb for ARM CPUs (opt --valid_targets=arm)", device_kinds=("arm",)),
    ConversionTarget("x86", "Paddle Lite .nb for x86 CPUs (opt --valid_targets=x86)", device_kinds=("cpu",)),
    ConversionTarget("opencl", "Paddle Lite .nb for OpenCL GPUs with ARM CPU fallback (valid_targets=opencl,arm)"),
    ConversionTarget("huawei_ascend_npu", "Paddle Lite .nb for Huawei Ascend NPUs via NNAdapter"
                     " (valid_targets=huawei_ascend_npu,<host>; option host=arm|x86, default arm)",
                     device_kinds=("npu",)),
    ConversionTarget("cambricon_mlu", "Paddle Lite .nb for Cambricon MLUs via NNAdapter"
                     " (valid_targets=cambricon_mlu,<host>; option host=arm|x86, default x86)",
                     device_kinds=("mlu",)),
]
TARGET_NAMES = {t.name for t in TARGETS}


def valid_targets_for(target: str, options: dict[str, Any]) -> str:
    """opt's ``valid_targets`` for one of :data:`TARGETS` (NPU targets always name the NPU first:
    leaving it out is the classic trap where Lite silently runs everything on the CPU)."""
    from hwdeploy_arm.plugin import CONVERT_OPTIONS

    CONVERT_OPTIONS.check(options)
    if target in CPU_TARGETS:
        if "host" in options:
            raise OptionError(f"option host= applies to NNAdapter targets, not {target!r}")
        return target
    if target == "opencl":
        return "opencl,arm"
    if target in NNADAPTER_TARGETS:
        host = options.get("host", NNADAPTER_TARGETS[target])
        if host not in CPU_TARGETS:
            raise OptionError(f"host must be one of {CPU_TARGETS}, got {host!r}")
        return f"{target},{host}"
    raise OptionError(f"not a Paddle Lite target: {target!r}; known: {sorted(TARGET_NAMES)}")


def legacy_program(model: Model) -> tuple[Any, str]:
    """The model as a legacy ProgramDesc ready for Lite (translated from PIR if needed), and its origin."""
    if model.format == "legacy":
        return prog.load_program(model.program), "legacy"
    if model.format == "pir":
        from hwdeploy.sdk.paddle_format import load_pir_program

        from hwdeploy_arm.pir_to_legacy import translate

        return translate(load_pir_program(model.program)), "pir-translated"
    raise ConversionError(f"{model.program}: cannot convert a {model.format!r} model for Paddle Lite")


def convert_to_nb(model: ModelLike, valid_targets: str, out_dir: Path, *, python: str | None = None,
                  timeout: float = 600.0) -> Artifact:
    """Convert ``model`` into ``out_dir/model.nb`` for opt's ``valid_targets`` (e.g. ``"arm"``,
    ``"huawei_ascend_npu,arm"``); returns an Artifact whose metadata holds the ops report.

    Raises :class:`~hwdeploy.UnsupportedOpsError` (listing ops) when the program cannot be translated
    or some op has a kernel on none of ``valid_targets``, and :class:`~hwdeploy.ConversionError`
    (with Lite's last log lines) when opt itself fails.
    """
    model = load_model(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    python = python or ensure_lite_python(create=False).path
    program, origin = legacy_program(model)
    before = prog.persistable_names(program)
    patches = prog.patch_for_lite(program)
    after = prog.persistable_names(program)
    program_path = out_dir / PROGRAM_NAME
    program_path.write_bytes(program.SerializeToString())
    params_path = model.params
    filtered = None
    if before != after:  # a patch demoted parameters: drop them from the parameter file too
        filtered = out_dir / "lite_model.pdiparams"
        prog.filter_params(model.params, before, after, filtered)
        params_path = filtered
    inputs, outputs = prog.io_specs(program)

    # 2. opt's own model check: which target has a kernel for each op.
    returncode, text = run_check(python, str(program_path), str(params_path), valid_targets)
    table = nbfile.parse_model_ops_table(text)
    unsupported = nbfile.parse_unsupported(text)
    if unsupported:
        raise UnsupportedOpsError(f"Paddle Lite has no kernel on {valid_targets} for op(s) {unsupported}"
                                  f" of {model.name or model.program}", unsupported)
    if not table:
        tail = "\n".join(text.strip().splitlines()[-12:])
        raise ConversionError(f"Paddle Lite's model check failed for {model.name or model.program} on {valid_targets}"
                              f" (rc {returncode}):\n{tail}")

    # 3. opt.
    graph_dir = out_dir / "graph"
    graph_dir.mkdir(exist_ok=True)
    worker = tool_worker()
    try:
        result = worker.request("opt", timeout=timeout, model_file=str(program_path), param_file=str(params_path),
                                valid_targets=valid_targets, out_prefix=str(out_dir / "model"),
                                visualize_dir=str(graph_dir))
    except LiteWorkerError as exc:
        raise ConversionError(f"Paddle Lite opt failed for {model.name or model.program} on {valid_targets}: {exc}") \
            from exc
    finally:
        if filtered is not None:
            filtered.unlink(missing_ok=True)

    # 4. The report.
    info = nbfile.read_nb(out_dir / NB_NAME)
    blocks = sorted(graph_dir.glob("Block_*.dot"), key=lambda p: int(p.stem.split("_")[1]))
    subgraph_ops: Counter = Counter()
    for block in blocks[1:]:
        subgraph_ops.update(nbfile.dot_ops(block))
    nnadapter = [t for t in valid_targets.split(",") if t in NNADAPTER_TARGETS]
    host_ops = info.ops_on({"x86", "arm", "host", "any"}) if nnadapter else Counter()
    model_ops = {op: [t for t, ok in marks.items() if ok] for op, marks in sorted(table.items())}
    report = {
        "valid_targets": valid_targets,
        "source_format": model.format,
        "program": origin,
        "patches": patches,
        "lite_version": info.version,
        "opt_seconds": round(result["opt_seconds"], 3),
        "nb_bytes": info.size,
        "inputs": [s.to_dict() for s in inputs],
        "outputs": [s.to_dict() for s in outputs],
        # opt's --print_model_ops: op -> targets with a kernel for it
        "model_ops": model_ops,
        # the optimised program: kernels per op and target (after fusions)
        "kernels": [{"op": op, "target": t, "count": n} for (op, t), n in sorted(info.kernels.items())],
        "kernel_targets": dict(info.targets),
        # NNAdapter targets: what runs on the device and what stays on the host CPU
        "nnadapter_device": nnadapter[0] if nnadapter else None,
        "subgraphs": info.kernels.get(("subgraph", "nnadapter"), 0),
        "subgraph_ops": dict(sorted(subgraph_ops.items())),
        "host_fallback_ops": dict(sorted(host_ops.items())),
    }
    if nnadapter and host_ops:
        no_kernel = sorted(op for op in host_ops if nnadapter[0] not in model_ops.get(op, []))
        report["host_fallback_no_kernel"] = no_kernel
        log.warning("Paddle Lite %s: %d op(s) of %s fall back to the host CPU: %s", nnadapter[0],
                    sum(host_ops.values()), model.name or model.program,
                    ", ".join(f"{op} x{n}" for op, n in sorted(host_ops.items())))
    (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=1))
    files = [NB_NAME, PROGRAM_NAME, REPORT_NAME]  # (graph/Block_N.dot stay beside them)
    return Artifact(valid_targets.split(",")[0], out_dir, files, report)


def report_lines(report: dict) -> list[str]:
    """A short human summary of a conversion report (used by the CLI and logs)."""
    lines = [f"valid_targets={report['valid_targets']} program={report['program']} lite={report['lite_version']}"
             f" nb={report['nb_bytes']} bytes"]
    kernels = Counter()
    for k in report["kernels"]:
        kernels[k["target"]] += k["count"]
    lines.append("kernels per target: " + ", ".join(f"{t} {n}" for t, n in sorted(kernels.items())))
    if report.get("nnadapter_device"):
        lines.append(f"{report['nnadapter_device']}: {report['subgraphs']} subgraph(s) holding "
                     + ", ".join(f"{op} x{n}" for op, n in report["subgraph_ops"].items()))
        host = report["host_fallback_ops"]
        lines.append("host CPU fallback: " + (", ".join(f"{op} x{n}" for op, n in host.items()) or "none"))
    return lines

