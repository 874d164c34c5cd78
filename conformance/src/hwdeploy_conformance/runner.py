"""The orchestrator: plans cases, runs each in an isolated worker, survives crashes and hangs.

This process never imports Paddle: it discovers the device through hwdeploy's
plugins (cheap by contract), reads the models' files with hwdeploy's
pure-Python readers and delegates every device call to a worker subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from hwdeploy_conformance import checks as C
from hwdeploy_conformance.config import (ConfigError, ExpectedFailures, VendorConfig, load_config,
                                         load_expected_failures)
from hwdeploy_conformance.config import NMS_FIELDS

DEFAULT_BATCH_RANGE = (1, 4)


@dataclass
class ModelInfo:
    """A model under test, as the workers and the report see it."""

    name: str
    source: str  # "zoo" or the path given
    program: str
    params: str | None
    format: str
    sha256: str
    task: str | None
    batch_range: tuple[int, int]
    zoo: str | None = None
    ops: list[str] = field(default_factory=list)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    dims: int = 8
    #: A detector's NMS settings (config [models.NAME.nms], else the program's NMS op): detection parity.
    nms: dict[str, Any] | None = None
    #: Real inputs (--inputs, [models.NAME] inputs_file, or inputs.npz beside the model), checked and hashed.
    inputs_file: str | None = None
    inputs_file_sha256: str | None = None
    inputs_file_samples: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["batch_range"] = list(self.batch_range)
        return data


@dataclass
class CheckResult:
    """One check of one case; ``outcome`` applies the expected-failures file to ``status``."""

    id: str
    model: str
    precision: str
    check: str
    scope: str
    status: str
    message: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    stderr_tail: str = ""
    worker: int = 0  # which worker attempt of the case produced it
    outcome: str = ""
    expected_failure: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _outcome(status: str, expected: bool) -> str:
    if status == C.PASSED:
        return C.XPASS if expected else C.PASS
    if status == C.SKIPPED:
        return C.SKIP
    if expected:
        return C.XFAIL
    return C.NOT_RUN if status == C.BLOCKED else C.FAIL


class Conformance:
    """One conformance run: a device, models, precisions, a scope, a vendor config.

    ``on_event(kind, **data)`` is called with ``"case"`` (a case starts),
    ``"begin"`` (a check starts) and ``"result"`` (a :class:`CheckResult`).
    """

    def __init__(self, device: str, models: list[str] | None = None, precisions: list[str] | None = None,
                 scope: str = C.FULL, config: VendorConfig | str | Path | None = None,
                 expected_failures: ExpectedFailures | str | Path | None = None, only: list[str] | None = None,
                 timeout: float | None = None, examples: int | None = None, seed: int | None = None,
                 on_event: Callable[..., None] | None = None, python: str | None = None,
                 workdir: str | Path | None = None, backend: str | None = None,
                 inputs: dict[str, str] | None = None):
        self.device_arg = device
        self.backend_arg = backend  # pick among devices of one kind from several backends ("cpu")
        self.model_args = list(models or ["zoo"])
        self.inputs_files = dict(inputs or {})  # model name ("" for the only model) -> .npz of real inputs
        self.precisions = list(precisions or ["fp32"])
        self.scope = scope
        self.config = config if isinstance(config, VendorConfig) else load_config(config)
        self.expected = (expected_failures if isinstance(expected_failures, ExpectedFailures)
                         else load_expected_failures(expected_failures))
        if timeout is not None:
            self.config.checks.timeout = float(timeout)
        if examples is not None:
            self.config.checks.examples = int(examples)
        if seed is not None:
            self.config.checks.seed = int(seed)
        for precision in self.precisions:
            self.config.tolerance(precision, "")  # raises ConfigError for an unknown precision
        self.checks = C.checks_for(scope, only)
        self.on_event = on_event or (lambda kind, **data: None)
        self.python = python or sys.executable
        self.workdir = Path(workdir) if workdir else None  # keep worker specs/logs there (else a temp dir)
        self.device = None
        self.plugin: dict[str, Any] = {}
        self.models: list[ModelInfo] = []
        self.results: list[CheckResult] = []
        self._interrupted: list[CheckResult] = []
        self.cases: list[dict[str, Any]] = []
        self.started = self.finished = 0.0

    # ------------------------------------------------------------------ planning
    def resolve(self) -> None:
        """Find the device and the models; raises HwdeployError/ConfigError with the reason."""
        import hwdeploy
        from hwdeploy.selection import select_devices
        from hwdeploy.contract.records import DeviceSpec
        from hwdeploy.contract.manager import get_plugin_manager

        self.device = select_devices(DeviceSpec.parse(self.device_arg), hwdeploy.devices(), self.backend_arg)[0]
        status = get_plugin_manager().statuses.get(self.device.plugin)
        self.plugin = status.to_dict() if status else {"name": self.device.plugin}
        self.models = resolve_models(self.model_args, self.config, self.inputs_files)

    def planned_ids(self) -> list[str]:
        return [f"{m.name}/{p}/{c.name}" for m in self.models for p in self.precisions for c in self.checks]

    # ------------------------------------------------------------------ running
    def run(self) -> list[CheckResult]:
        self.started = time.time()
        if self.device is None:
            self.resolve()
        with tempfile.TemporaryDirectory(prefix="hwdeploy-conformance-") as tmp:
            for model in self.models:
                for precision in self.precisions:
                    try:
                        self.results.extend(self.run_case(model, precision, self.workdir or Path(tmp)))
                    except KeyboardInterrupt:
                        self.results.extend(self._interrupted)  # what the case finished, for the reports
                        self.finished = time.time()
                        raise
        self.finished = time.time()
        return self.results

    def _result(self, model: ModelInfo, precision: str, check: str, **data: Any) -> CheckResult:
        check_id = f"{model.name}/{precision}/{check}"
        expected = self.expected.match(check_id)
        result = CheckResult(check_id, model.name, precision, check, C.BY_NAME[check].scope, **data)
        result.expected_failure = (expected.reason or expected.pattern) if expected else None
        result.outcome = _outcome(result.status, expected is not None)
        return result

    def run_case(self, model: ModelInfo, precision: str, tmp: Path) -> list[CheckResult]:
        """All checks of ``model`` at ``precision``: one worker, a fresh one after each crash/hang."""
        tolerance, sources = self.config.tolerance(precision, model.name, model.ops)
        case_id = f"{model.name}/{precision}"
        self.on_event("case", case=case_id, checks=len(self.checks))
        done: dict[str, CheckResult] = {}
        crashes: list[dict[str, Any]] = []
        try:
            self._run_case_workers(model, precision, tmp, tolerance.to_dict(), sources, done, crashes)
        except KeyboardInterrupt:
            for name in [c.name for c in self.checks if c.name not in done]:
                done[name] = self._result(model, precision, name, status=C.BLOCKED, message="not run: interrupted")
            self._interrupted = [done[c.name] for c in self.checks]
            raise
        receipt = (done.get("fallback_receipt") or done.get("load"))
        self.cases.append({"id": case_id, "model": model.name, "precision": precision,
                           "workers": max((r.worker for r in done.values()), default=0), "crashes": crashes,
                           "tolerance": tolerance.to_dict(), "tolerance_sources": sources,
                           "receipt": (receipt.figures.get("receipt") if receipt else None),
                           "reference_receipt": done["load"].figures.get("reference_receipt") if "load" in done
                           else None})
        return [done[c.name] for c in self.checks if c.name in done]

    def worker_spec(self, model: ModelInfo, precision: str, checks: list[str], *, load_in_setup: bool = False,
                    reference_ok: bool = True) -> dict[str, Any]:
        """What a worker needs to run ``checks`` of one case (``python -m hwdeploy_conformance.worker SPEC ...``)."""
        tolerance, sources = self.config.tolerance(precision, model.name, model.ops)
        return {"device": self.device.id, "backend": self.device.backend, "precision": precision,
                "model": model.to_dict(), "tolerance": tolerance.to_dict(), "tolerance_sources": sources,
                "checks": list(checks), "settings": self.config.checks.to_dict(),
                "device_options": self.config.device_options, "host_compute": self.config.host_compute,
                "load_in_setup": load_in_setup, "reference_ok": reference_ok}

    def _run_case_workers(self, model: ModelInfo, precision: str, tmp: Path, tolerance: dict[str, float],
                          sources: list[str], done: dict[str, CheckResult], crashes: list[dict[str, Any]]) -> None:
        """Fill ``done`` (check name -> result) and ``crashes``, starting workers until every check has a result."""
        remaining = [c.name for c in self.checks]
        attempts = 0
        while remaining:
            attempts += 1
            spec = self.worker_spec(model, precision, remaining,
                                    load_in_setup="load" in done and done["load"].status == C.PASSED,
                                    reference_ok="reference" not in done or done["reference"].status == C.PASSED)
            run = self._run_worker(spec, tmp / f"{model.name}-{precision}-{attempts}")
            for event in run.results:
                data = {k: event.get(k) for k in ("status", "message", "figures", "evidence", "duration_s")}
                done[event["check"]] = self._result(model, precision, event["check"], worker=attempts, **data)
                self.on_event("result", result=done[event["check"]])
            remaining = [name for name in remaining if name not in done]
            if not remaining:
                break
            if run.setup_failed:
                for name in remaining:
                    done[name] = self._result(model, precision, name, status=C.ERROR, worker=attempts,
                                              message=f"worker setup failed: {run.setup_failed}",
                                              stderr_tail=run.stderr_tail)
                    self.on_event("result", result=done[name])
                break
            # The worker died or was killed: the check in progress is the culprit.
            culprit = run.current if run.current in remaining else remaining[0]
            during = "" if run.current == culprit else f" while setting up (before {culprit})"
            if run.hung:
                status = C.HUNG
                budget = self.config.checks.timeout if run.current == culprit else self.config.checks.setup_timeout
                message = (f"hung: no result within {budget:g}s{during}; the worker was killed"
                           " (Python stacks at the time are in stderr_tail)")
            else:
                status = C.CRASHED
                message = f"crashed: the worker {describe_exit(run.returncode)}{during}"
            done[culprit] = self._result(model, precision, culprit, status=status, message=message, worker=attempts,
                                         stderr_tail=run.stderr_tail, duration_s=run.current_seconds,
                                         evidence=crash_evidence(run.stderr_tail))
            self.on_event("result", result=done[culprit])
            crashes.append({"worker": attempts, "check": culprit, "status": status, "returncode": run.returncode})
            remaining = [name for name in remaining if name != culprit]
            blocked = None
            if culprit == "load":
                blocked = f"blocked: load {status}"
            elif attempts > self.config.checks.max_restarts:
                blocked = (f"not run: the case's worker crashed or hung {len(crashes)} time(s)"
                           f" (max_restarts={self.config.checks.max_restarts})")
            if blocked:
                for name in remaining:
                    done[name] = self._result(model, precision, name, status=C.BLOCKED, message=blocked,
                                              worker=attempts)
                    self.on_event("result", result=done[name])
                break

    def _run_worker(self, spec: dict[str, Any], directory: Path) -> "WorkerRun":
        directory.mkdir(parents=True, exist_ok=True)
        spec_path, progress_path = directory / "spec.json", directory / "progress.jsonl"
        spec_path.write_text(json.dumps(spec))
        progress_path.touch()
        env = dict(os.environ)
        env.setdefault("GLOG_minloglevel", "2")
        env["PYTHONFAULTHANDLER"] = "1"
        run = WorkerRun()
        # One file for both streams: Paddle prints its fatal-signal report on stdout, Python's on stderr.
        with open(directory / "output.txt", "wb") as out:
            proc = subprocess.Popen([self.python, "-m", "hwdeploy_conformance.worker", str(spec_path),
                                     str(progress_path)], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                self._watch(proc, _LineReader(progress_path), run)
            except BaseException:  # Ctrl-C or a bug here: never leave a worker running on the device
                _kill_group(proc)
                raise
            run.returncode = proc.returncode
        run.stderr_tail = _tail(directory / "output.txt")
        return run

    def _watch(self, proc: subprocess.Popen, reader: "_LineReader", run: "WorkerRun") -> None:
        """Follow the worker's progress; past a check's deadline, dump its stacks and kill it."""
        checks = self.config.checks
        begun = time.monotonic()
        deadline = begun + checks.setup_timeout
        while True:
            try:
                proc.wait(timeout=0.2)
                finished = True
            except subprocess.TimeoutExpired:
                finished = False
            for event in reader.read():
                kind = event.get("event")
                if kind == "begin":
                    run.current = event["check"]
                    begun = time.monotonic()
                    deadline = begun + (checks.setup_timeout if run.current == "setup" else checks.timeout)
                    if run.current != "setup":
                        self.on_event("begin", check=run.current)
                elif kind == "result":
                    run.results.append(event)
                    run.current = None
                elif kind == "setup_failed":
                    run.setup_failed = event.get("message", "?")
                    run.current = None
                elif kind == "setup_done":
                    run.current = None
            if finished:
                break
            if time.monotonic() > deadline:
                run.hung = True
                _dump_and_kill(proc)
                for event in reader.read():  # a result written at the last moment still counts
                    if event.get("event") == "result":
                        run.results.append(event)
                        if event["check"] == run.current:
                            run.current, run.hung = None, False
                break
        run.current_seconds = time.monotonic() - begun


@dataclass
class WorkerRun:
    results: list[dict[str, Any]] = field(default_factory=list)
    current: str | None = None
    current_seconds: float = 0.0
    hung: bool = False
    returncode: int | None = None
    setup_failed: str | None = None
    stderr_tail: str = ""


class _LineReader:
    """Reads complete JSON lines appended to a file since the last call."""

    def __init__(self, path: Path):
        self.path, self.pos, self.partial = path, 0, b""

    def read(self) -> list[dict[str, Any]]:
        with open(self.path, "rb") as fh:
            fh.seek(self.pos)
            data = fh.read()
        self.pos += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


def _dump_and_kill(proc: subprocess.Popen) -> None:
    """Ask a hung worker for its Python stacks (faulthandler on SIGUSR1), then kill its process group."""
    try:
        os.kill(proc.pid, signal.SIGUSR1)
        proc.wait(timeout=1)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def describe_exit(returncode: int | None) -> str:
    from hwdeploy.sdk.isolation import describe_exit as describe

    return describe(returncode)


_FATAL_MARKERS = ("Fatal Python error", "terminate called", "what():", "FatalError:", "Error Message", "Aborted")


def crash_evidence(tail: str, frames: int = 4, limit: int = 16) -> list[str]:
    """The telling lines of a crashed/hung worker's output: fatal messages and the innermost Python frames
    of each thread (faulthandler prints "(most recent call first)")."""
    lines = tail.splitlines()
    evidence = [line.strip() for line in lines if any(m in line for m in _FATAL_MARKERS)]
    for i, line in enumerate(lines):
        if "most recent call first" in line:
            evidence.append(line.strip())
            evidence += [f.strip() for f in lines[i + 1:i + 1 + frames] if f.startswith("  File")]
    if not evidence:
        evidence = [line for line in lines[-6:] if line.strip()]
    return evidence[:limit]


def _tail(path: Path, lines: int = 80, max_chars: int = 10000) -> str:
    try:
        text = path.read_bytes().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])[-max_chars:]


def resolve_models(args: list[str], config: VendorConfig,
                   inputs_files: dict[str, str] | None = None) -> list[ModelInfo]:
    """``zoo`` (every zoo model), ``zoo:NAME`` or a model path (dir, prefix, program file)."""
    from hwdeploy import load_model
    from hwdeploy.sdk.isolation import run_probe

    zoo_names: list[str] = []
    paths: list[str] = []
    for arg in args:
        if arg == "zoo":
            try:
                from hwdeploy import zoo
            except ImportError as exc:
                raise ConfigError(f"--models zoo: hwdeploy.zoo is not available ({exc}); pass model paths") from None
            zoo_names += [n for n in zoo.names() if n not in zoo_names]
        elif arg.startswith("zoo:"):
            if arg[4:] not in zoo_names:
                zoo_names.append(arg[4:])
        else:
            paths.append(arg)
    infos: list[ModelInfo] = []
    if zoo_names:
        probe = run_probe("hwdeploy_conformance.worker:describe_zoo_models", [zoo_names],
                          timeout=max(600.0, config.checks.timeout))
        if not probe.ok:
            raise ConfigError(f"could not prepare zoo models {zoo_names}: {probe.error}\n{probe.stderr_tail}")
        for d in probe.value:
            settings = config.model(d["name"])
            nms = settings.nms or _nms(d["program"], d["format"])
            infos.append(ModelInfo(d["name"], "zoo", d["program"], d["params"], d["format"], d["sha256"],
                                   settings.task or d["task"], settings.batch_range or tuple(d["batch_range"]),
                                   zoo=d["zoo"], ops=_ops(d["program"], d["format"]), inputs=settings.inputs,
                                   dims=settings.dims, nms=nms))
    for path in paths:
        model = load_model(path)
        name = model.name or Path(path).name
        while any(i.name == name for i in infos):
            name += "_"
        settings = config.model(name)
        nms = settings.nms or _nms(str(model.program), model.format)
        # A program ending in NMS is a detector, whatever the config forgot to say.
        task = settings.task or model.metadata.get("task") or ("detection" if nms else None)
        infos.append(ModelInfo(name, str(path), str(model.program), str(model.params) if model.params else None,
                               model.format, model.sha256, task,
                               settings.batch_range or tuple(model.metadata.get("batch_range", DEFAULT_BATCH_RANGE)),
                               ops=_ops(str(model.program), model.format), inputs=settings.inputs,
                               dims=settings.dims, nms=nms))
    if not infos:
        raise ConfigError("no models to test (--models)")
    _attach_inputs_files(infos, config, dict(inputs_files or {}), {i.name for i in infos if i.source != "zoo"})
    return infos


def _attach_inputs_files(infos: list[ModelInfo], config: VendorConfig, given: dict[str, str],
                         by_path: set[str]) -> None:
    """Give each model its real inputs: ``--inputs [NAME=]FILE`` first, then ``[models.NAME] inputs_file``,
    then ``inputs.npz`` in a path model's folder. Each file is checked against the model's inputs here, in the
    parent, so a bad one is a setup error (exit 2) before any worker starts."""
    import hashlib

    from hwdeploy_conformance.inputs import INPUTS_FILE_NAME, InputsFileError, load_inputs_file

    if "" in given and len(infos) > 1:
        raise ConfigError(f"--inputs {given['']}: {len(infos)} models under test; say which one: --inputs"
                          f" NAME=FILE (models: {', '.join(i.name for i in infos)})")
    unknown = set(given) - {i.name for i in infos} - {""}
    if unknown:
        raise ConfigError(f"--inputs names model(s) {sorted(unknown)} not under test (models:"
                          f" {', '.join(i.name for i in infos)})")
    for info in infos:
        path = given.get(info.name) or given.get("") or config.model(info.name).inputs_file
        if not path and info.name in by_path:
            beside = Path(info.program).parent / INPUTS_FILE_NAME
            path = str(beside) if beside.is_file() else None
        if not path:
            continue
        try:
            arrays = load_inputs_file(path, _input_specs(info))
        except InputsFileError as exc:
            raise ConfigError(f"model {info.name}: {exc}") from None
        info.inputs_file = str(Path(path).resolve())
        info.inputs_file_sha256 = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        info.inputs_file_samples = int(arrays[0].shape[0])


def _input_specs(info: ModelInfo) -> list:
    from hwdeploy.contract.model import load_model, model_io
    from hwdeploy.sdk import paddle_format

    model = load_model(info.program, info.params, validate=False)
    io = model_io(model)
    return io[0] if io is not None else paddle_format.legacy_inputs(model.program)


#: Paddle's NMS ops (PaddleDetection exports), whose attributes say what may flip a detection.
NMS_OPS = ("pd_op.multiclass_nms3", "pd_op.multiclass_nms", "pd_op.matrix_nms")


def _nms(program: str, fmt: str) -> dict[str, Any] | None:
    """The NMS settings of a PIR program's (first) NMS op, or None (legacy programs: set them in the config)."""
    if fmt != "pir":
        return None
    from hwdeploy.sdk import paddle_format

    for op in paddle_format.iter_all_ops(paddle_format.load_pir_program(Path(program)).ops):
        if op.type in NMS_OPS:
            return {k: op.attrs[k] for k in NMS_FIELDS if isinstance(op.attrs.get(k), (int, float))}
    return None


def _ops(program: str, fmt: str) -> list[str]:
    if fmt != "pir":
        return []
    from hwdeploy.sdk import paddle_format

    return sorted(set(paddle_format.load_pir_program(Path(program)).op_types()))
