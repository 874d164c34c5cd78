"""``hwdeploy conformance``: the command a hardware CI lab runs on each machine."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from hwdeploy_conformance import checks as C

HELP = "certify a device: parity vs the CPU reference, silent-fallback detection, robustness"

EPILOG = """\
exit status: 0 no unexpected failure, 1 unexpected failures, 2 usage/setup error
(device not found, bad config). The JSON and JUnit reports are written in every case.
verdict: conformant (every mandatory check ran and passed, no fallback evidence failed),
not_conformant, or incomplete (mandatory checks not run: --checks, skipped, blocked).
checks: """ + ", ".join(f"{c.name} ({c.scope})" for c in C.CHECKS)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``hwdeploy conformance`` to ``parser``."""
    parser.description = HELP
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--device", help="device to certify, e.g. npu:0, gpu:1 (required unless merging); several,"
                                         " comma-separated (npu:0,npu:1), run in parallel, one report each")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="with several devices: at most N runs at a time (default: all at once)")
    parser.add_argument("--backend", help="the device's backend, when several provide its kind (e.g. cpu)")
    parser.add_argument("--models", nargs="+", default=["zoo"], metavar="zoo|zoo:NAME|PATH",
                        help="models: 'zoo' (all zoo models), 'zoo:NAME', or model paths (default: zoo)")
    parser.add_argument("--inputs", action="append", default=[], metavar="[MODEL=]FILE.npz",
                        help="real inputs for a model (arrays named after its inputs, first dimension the sample);"
                             " without MODEL= for the only model; default: inputs.npz beside a model given by path")
    parser.add_argument("--precision", default="fp32", help="comma-separated: fp32,fp16,bf16,int8 (default fp32)")
    parser.add_argument("--scope", choices=C.SCOPES, default=C.FULL,
                        help="mandatory (the mandatory checks and the fallback evidence) or full (adds concurrency and"
                             " lifecycle; default)")
    parser.add_argument("--checks", default=None, help="comma-separated subset of checks to run (load always runs)")
    parser.add_argument("--expected-failures", metavar="FILE", help="known failures of this device (MODEL/PREC/CHECK)")
    parser.add_argument("--config", metavar="vendor.toml", help="vendor config: tolerances, model settings, knobs")
    parser.add_argument("--report", default="hwdeploy-conformance.json", metavar="out.json", help="JSON report path")
    parser.add_argument("--junit", metavar="out.xml", help="JUnit XML report path")
    parser.add_argument("--timeout", type=float, help="seconds per check before it is declared hung")
    parser.add_argument("--examples", type=int, help="Hypothesis examples per model for parity")
    parser.add_argument("--seed", type=int, help="input seed (same seed, same inputs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # `hwdeploy conformance merge REPORT... --out DIR`: the lab scoreboard (hwdeploy_conformance.scoreboard).
    from hwdeploy_conformance import scoreboard

    from hwdeploy_conformance import coverage

    actions = parser.add_subparsers(dest="conformance_action", metavar="merge|coverage")
    scoreboard.configure_parser(actions.add_parser("merge", help="merge lab reports into one scoreboard"))
    coverage.configure_parser(actions.add_parser("coverage", help="model x backend matrix: parity figure or refusal"))


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Run the suite as ``args`` asks, write the reports, print the summary; return the exit code."""
    if getattr(args, "conformance_action", None) == "merge":
        from hwdeploy_conformance import scoreboard

        return scoreboard.run(args)
    if getattr(args, "conformance_action", None) == "coverage":
        from hwdeploy_conformance import coverage

        return coverage.run(args)
    if not args.device:
        print("hwdeploy conformance: the following arguments are required: --device"
              " (or: hwdeploy conformance merge REPORT... --out DIR)", file=sys.stderr)
        return 2
    devices = [d.strip() for d in args.device.split(",")]
    if len(devices) > 1 or args.jobs is not None:
        from hwdeploy_conformance.parallel import run_devices

        return run_devices(args, devices)
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hwdeploy.errors import HwdeployError
    from hwdeploy_conformance.config import ConfigError
    from hwdeploy_conformance.report import build_report, print_summary, write_json, write_junit
    from hwdeploy_conformance.runner import Conformance

    console = Console()
    if not console.is_terminal:  # CI logs: room for the summary table
        console = Console(width=max(console.width, 140))
    err_console = Console(stderr=True)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    only = [c.strip() for c in args.checks.split(",")] if args.checks else None
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, transient=True, disable=args.no_progress)
    state: dict[str, Any] = {}

    def on_event(kind: str, **data: Any) -> None:
        if kind == "case":
            state["case"] = data["case"]
        elif kind == "begin":
            progress.update(state["task"], description=f"{state.get('case', '')} {data['check']}")
        elif kind == "result":
            progress.advance(state["task"])
            result = data["result"]
            if result.outcome == C.FAIL:  # the whole message (it wraps): never cut mid-message
                progress.console.print(f"[red]{escape(result.id)}: {result.status}[/] {escape(result.message)}",
                                       highlight=False)

    try:
        conformance = Conformance(args.device, args.models, precisions, args.scope, args.config,
                                  args.expected_failures, only, args.timeout, args.examples, args.seed, on_event,
                                  backend=args.backend, inputs=inputs_files(args.inputs))
    except (ConfigError, ValueError) as exc:
        err_console.print(f"[bold red]hwdeploy conformance:[/] {exc}", highlight=False)
        return 2
    error = None

    def terminated(signum, frame):  # CI timeouts send SIGTERM: stop, kill the worker, write the reports
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        conformance.resolve()
    except (HwdeployError, ConfigError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    if error is None:
        with progress:
            state["task"] = progress.add_task("starting", total=len(conformance.planned_ids()))
            try:
                conformance.run()
            except KeyboardInterrupt as exc:
                error = f"interrupted ({exc or 'Ctrl-C'}): the reports hold the checks finished so far"
    signal.signal(signal.SIGTERM, previous)
    report = build_report(conformance, argv=argv if argv is not None else sys.argv, error=error)
    write_json(report, args.report)
    if args.junit:
        write_junit(report, args.junit)
    print_summary(report, console)
    console.print(f"report: {args.report}" + (f", junit: {args.junit}" if args.junit else ""), highlight=False)
    return report["exit_code"]


def inputs_files(values: list[str]) -> dict[str, str]:
    """``--inputs [MODEL=]FILE`` values as {model name, or "" for the only model: file}."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, path = value.rpartition("=")
        key = name if sep else ""
        if key in out:
            raise ValueError(f"--inputs given twice for {key or 'the model'}: {out[key]} and {path}")
        out[key] = path
    return out


def main(argv: list[str] | None = None) -> int:
    """``hwdeploy-conformance ...`` / ``python -m hwdeploy_conformance ...`` (same as ``hwdeploy conformance``)."""
    parser = argparse.ArgumentParser(prog="hwdeploy conformance")
    configure_parser(parser)
    argv = sys.argv[1:] if argv is None else argv
    return run(parser.parse_args(argv), argv=["hwdeploy", "conformance", *argv])


if __name__ == "__main__":
    sys.exit(main())
