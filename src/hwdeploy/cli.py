"""The ``hwdeploy`` command line: devices, plugins, run, convert, zoo (+ plugin subcommands)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


#: Where ``--json`` output goes: the real stdout, kept aside while native libraries' stdout goes to stderr.
_json_out = None
#: Width of tables without a terminal and without $COLUMNS: wide enough that nothing wraps mid-word.
PLAIN_WIDTH = 200


def _console(stderr: bool = False):
    import os

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if os.environ.get("COLUMNS") or stream.isatty() else PLAIN_WIDTH
    return Console(stderr=stderr, highlight=False, width=width)


def _error(text: str) -> None:
    """One error line on stderr, never wrapped (logs and scripts grep it), never read as markup."""
    from rich.markup import escape

    _console(stderr=True).print(f"[red]error:[/] {escape(text)}", soft_wrap=True)


def _console_on(stream):
    from rich.console import Console

    return Console(file=stream, highlight=False)


def _print_json(data: Any) -> None:
    out = _json_out or sys.stdout
    out.write(json.dumps(data, indent=2, default=str) + "\n")
    out.flush()


@contextlib.contextmanager
def _stdout_to_stderr():
    """Native libraries (Paddle prints ``ReduceMeanCheckIfOneDNNSupport`` with ``std::cout``) write to fd 1:
    point fd 1 at stderr while a ``--json`` command runs, and give ``_print_json`` the real stdout."""
    global _json_out
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    _json_out = os.fdopen(real, "w", closefd=True)
    try:
        yield
    finally:
        _json_out.flush()
        os.dup2(_json_out.fileno(), 1)
        _json_out.close()
        _json_out = None


_NOTEWORTHY = re.compile(r"warn|error|fallback|fail", re.IGNORECASE)


@contextlib.contextmanager
def _native_output_captured(verbose: bool):
    """While a progress bar is live, native writes to fd 1/2 go to a file instead of through the bar; shown
    afterwards with ``-v``, else counted in one line."""
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            # rich writes through Python's sys.stderr, which now reaches the sink too: give it the real stderr.
            real_err = os.fdopen(os.dup(saved[1]), "w")
            yield real_err
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            real_err.close()
        sink.seek(0)  # reached only when the body did not raise: replay what the natives wrote
        lines = sink.read().decode(errors="replace").splitlines()
        shown = [line for line in lines if verbose or _NOTEWORTHY.search(line)]
        if shown:
            sys.stderr.write("\n".join(shown) + "\n")
        if len(shown) < len(lines):
            sys.stderr.write(f"({len(lines) - len(shown)} line(s) of native runtime output hidden; -v shows them)\n")


def _human_bytes(n: int | None) -> str:
    if not n:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


# ------------------------------------------------------------------ devices
def cmd_devices(args: argparse.Namespace) -> int:
    import hwdeploy
    from rich.table import Table

    found = hwdeploy.devices(refresh=True)
    if args.json:
        _print_json([d.to_dict() for d in found])
        return EXIT_OK
    console = _console()
    wide = console.width >= 120  # name and memory only where they fit beside the reasons
    table = Table(title="hwdeploy devices")
    for column in ("device", "backend", "plugin"):
        table.add_column(column, no_wrap=True)
    if wide:
        table.add_column("name", no_wrap=True, max_width=24, overflow="ellipsis")
        table.add_column("memory", no_wrap=True)
    table.add_column("status", ratio=1, min_width=24)  # long reasons wrap at words
    for d in found:
        status = "[green]available[/]" if d.available else f"[red]absent[/]: {d.reason}"
        extra = (d.name, _human_bytes(d.memory_bytes)) if wide else ()
        table.add_row(d.id, d.backend, d.plugin, *extra, status)
    console.print(table)
    _print_offered("more device kinds and backends come with plugins")
    return EXIT_OK


def _print_offered(intro: str) -> None:
    from hwdeploy.selection import offered_plugins

    from rich.markup import escape

    offered = offered_plugins()
    if offered:  # one extra a line: short enough for any terminal, and "hwdeploy[gpu]" is text, not markup
        lines = [f"  {extra}: pip install 'hwdeploy[{extra}]'" for extra in sorted(offered)]
        _console().print(escape("\n".join([f"{intro}:"] + lines)), soft_wrap=True)


# ------------------------------------------------------------------ plugins
def cmd_plugins(args: argparse.Namespace) -> int:
    import hwdeploy
    from hwdeploy.contract.manager import get_plugin_manager
    from rich.table import Table

    # Exercise the listing hooks (the parser already asked for CLI commands) so that contract breaks show up too.
    hwdeploy.devices(refresh=True)
    manager = get_plugin_manager()
    manager.conversion_targets()
    manager.option_schemas()
    statuses = [s.to_dict() for s in manager.statuses.values()]
    if args.json:
        _print_json(statuses)
        return EXIT_OK
    table = Table(title="hwdeploy plugins")
    for column in ("plugin", "state", "distribution", "version", "requires", "error"):
        table.add_column(column, overflow="fold")
    for s in statuses:
        color = {"loaded": "green", "disabled": "yellow"}.get(s["state"], "red")
        errors = s["error"] or "; ".join(f"{k}: {v}" for k, v in s["hook_errors"].items())
        table.add_row(s["name"], f"[{color}]{s['state']}[/]", s["distribution"], s["version"], ", ".join(s["requires"]),
                      errors)
    _console().print(table)
    return EXIT_OK


# ------------------------------------------------------------------ run
def _load_inputs(predictor, args: argparse.Namespace) -> list[np.ndarray]:
    from hwdeploy.errors import InputError

    if args.input:
        arrays = []
        for item in args.input:
            path = Path(item)
            if not path.exists():
                raise InputError(f"input file not found: {path}")
            if not path.is_file():  # a FIFO or a device would block or never end
                raise InputError(f"input {path} is not a regular file")
            try:
                arrays.append(np.load(path, allow_pickle=False))
            except (ValueError, OSError) as exc:
                raise InputError(f"{path}: not a .npy array ({exc})") from None
        return arrays
    model = predictor.model
    if model.metadata.get("zoo"):
        from hwdeploy import zoo

        return zoo.get(model.metadata["zoo"]).sample_inputs(batch=args.batch, seed=args.seed)
    from hwdeploy.sdk.inputs import random_inputs

    return random_inputs(predictor.inputs, args.batch, args.seed)


def _check_writable(path: str | None, option: str, directory: bool = False) -> None:
    """Refuse an output path that cannot be written *before* any model runs, so no work is lost.

    Proven by writing: permission bits say nothing to root, and /proc or a read-only mount refuse anyway.
    """
    import tempfile

    from hwdeploy.errors import OptionError

    if not path:
        return
    target = Path(path)
    if target.exists() and (target.is_dir() != directory):
        raise OptionError(f"{option} {path}: exists and is {'not ' if directory else ''}a directory")
    if target.exists() and not directory and not target.is_file():  # a FIFO would block, a device never ends
        raise OptionError(f"{option} {path}: exists and is not a regular file")
    if not directory and not target.parent.is_dir():
        raise OptionError(f"{option} {path}: directory {target.parent} does not exist")
    try:
        if not directory:
            existed = target.exists()
            with open(target, "a"):  # appends nothing: an existing file keeps its bytes until the real write
                pass
            if not existed:
                target.unlink()
        else:
            nearest = target
            while not nearest.exists() and nearest != nearest.parent:
                nearest = nearest.parent
            if not nearest.is_dir():
                raise OptionError(f"{option} {path}: {nearest} is not a directory")
            with tempfile.TemporaryFile(dir=nearest):
                pass
    except OSError as exc:
        raise OptionError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None


@contextlib.contextmanager
def _writing(path: str, option: str):
    """Turn an OSError of a late write (the disk filled up meanwhile) into a typed one-line error."""
    from hwdeploy.errors import OptionError

    try:
        yield
    except OSError as exc:
        raise OptionError(f"{option} {path}: could not write ({exc.strerror or exc})") from None


def _run_one(model_ref: str, args: argparse.Namespace) -> dict[str, Any]:
    import hwdeploy

    started = time.perf_counter()
    p = hwdeploy.predictor(model_ref, device=args.device, fallback=args.fallback, **args.options)
    created = time.perf_counter() - started
    try:
        inputs = _load_inputs(p, args)
        outputs = p.run(*inputs)  # warm-up, and the outputs we report
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            p.run(*inputs)
            times.append(time.perf_counter() - t0)
        receipt = p.receipt()
    finally:
        p.close()
    result = {
        "model": model_ref, "device": receipt.actual, "backend": receipt.backend, "plugin": receipt.plugin,
        "create_s": created, "latency_ms": float(np.median(times) * 1e3) if times else None,
        "outputs": [{"name": n, "shape": list(o.shape), "dtype": str(o.dtype), "mean": float(np.mean(o)),
                     "std": float(np.std(o))} for n, o in zip(p.output_names, outputs)],
        "fallback_reasons": receipt.fallback_reasons(), "receipt": receipt.to_dict(),
    }
    if args.output:
        with _writing(args.output, "--output"):
            np.savez(args.output, **{n: o for n, o in zip(p.output_names, outputs)})
    return result


def cmd_run(args: argparse.Namespace) -> int:
    from rich.progress import Progress
    from rich.table import Table

    if args.model:
        models = [args.model]
    else:
        from hwdeploy import zoo

        models = [f"zoo:{name}" for name in zoo.names()]
    if args.input and len(models) > 1:
        raise SystemExit("--input needs a MODEL")
    import hwdeploy
    from hwdeploy.contract.records import DeviceSpec
    from hwdeploy.selection import select_devices

    from hwdeploy.sdk.options import parse_option_pairs

    _check_writable(args.receipt, "--receipt")
    _check_writable(args.output, "--output")
    args.options = parse_option_pairs(args.option)
    for name in ("precision", "calibration"):  # shorthands of --option NAME=VALUE
        if getattr(args, name) is not None:
            args.options[name] = getattr(args, name)
    spec = DeviceSpec.parse(args.device)
    if spec.kind != "auto":  # a device that is not here is refused once, before any model is loaded
        select_devices(spec, hwdeploy.devices())
    results, failures = [], 0
    capture = contextlib.nullcontext(sys.stderr) if args.json else _native_output_captured(args.verbose > 0)
    with capture as err_stream, Progress(console=_console_on(err_stream), transient=True,
                                         disable=args.json) as progress:
        task = progress.add_task("running", total=len(models))
        for ref in models:
            progress.update(task, description=f"{ref} on {args.device}")
            try:
                results.append(_run_one(ref, args))
            except Exception as exc:  # report every model, fail at the end
                from hwdeploy.errors import FallbackError

                failures += 1
                entry = {"model": ref, "error": f"{type(exc).__name__}: {exc}"}
                if isinstance(exc, FallbackError):
                    entry["receipt"] = exc.receipt.to_dict()
                results.append(entry)
            progress.advance(task)
    if args.receipt:
        receipts = [r.get("receipt") for r in results]
        with _writing(args.receipt, "--receipt"):
            Path(args.receipt).write_text(json.dumps(receipts[0] if len(receipts) == 1 else receipts, indent=2))
    if args.json:
        _print_json(results if len(results) > 1 else results[0])
    elif len(results) == 1 and "error" in results[0]:
        _error(results[0]["error"])
    else:
        table = Table(title=f"hwdeploy run --device {args.device}")
        for column in ("model", "ran on", "backend", "create", "latency", "outputs"):
            table.add_column(column, no_wrap=True)
        table.add_column("status")
        for r in results:
            if "error" in r:
                table.add_row(r["model"], "", "", "", "", "", f"[red]{r['error']}[/]")
                continue
            outs = ", ".join(_shape(o["shape"]) + f" {o['dtype']}" for o in r["outputs"])
            status = "[yellow]fallback: " + "; ".join(r["fallback_reasons"]) + "[/]" if r["fallback_reasons"] else "[green]ok[/]"
            table.add_row(r["model"], r["device"], r["backend"], f"{r['create_s']:.2f} s",
                          f"{r['latency_ms']:.2f} ms" if r["latency_ms"] is not None else "", outs, status)
        _console().print(table)
    return EXIT_FAIL if failures else EXIT_OK


def _shape(shape) -> str:
    """``[-1, 64]`` -> ``"N×64"``: dynamic dims as letters, for people."""
    return "×".join("N" if dim == -1 and axis == 0 else "?" if dim < 0 else str(dim) for axis, dim in enumerate(shape))


# ------------------------------------------------------------------ convert
def cmd_convert(args: argparse.Namespace) -> int:
    import hwdeploy
    from hwdeploy.sdk.options import parse_option_pairs

    if args.list or not args.target:
        targets = [{"target": t.name, "plugin": p, "description": t.description, "device_kinds": list(t.device_kinds)}
                   for p, t in hwdeploy.conversion_targets()]
        if args.json:
            _print_json(targets)
        else:
            from rich.table import Table

            table = Table(title="conversion targets")
            for column in ("target", "plugin", "device kinds"):
                table.add_column(column, no_wrap=True)
            table.add_column("description")
            for t in targets:
                table.add_row(t["target"], t["plugin"], ", ".join(t["device_kinds"]), t["description"])
            _console().print(table)
            if not targets:
                _console().print("no installed plugin offers a conversion target")
            _print_offered("plugins add conversion targets")
        return EXIT_OK if args.list else EXIT_USAGE
    if not args.model:
        raise SystemExit("convert needs MODEL and --target")
    _check_writable(args.out, "--out", directory=True)
    options = parse_option_pairs(args.option)
    if "calibration" in options and "calibration_sha256" not in options:
        # A quantizing target's cache key must follow the calibration data, not its path: check and hash it here,
        # as hwdeploy.predictor(..., precision="int8") does.
        from hwdeploy.sdk import calibration

        options.update(calibration.conversion_options(hwdeploy.load_model(args.model), options["calibration"],
                                                      f"hwdeploy convert --target {args.target}"))
    with _console(stderr=True).status(f"converting {args.model} for {args.target}", spinner="dots"):
        artifact = hwdeploy.convert(args.model, args.target, refresh=args.refresh, **options)
    if args.out:
        import shutil

        with _writing(args.out, "--out"):
            Path(args.out).mkdir(parents=True, exist_ok=True)
            for name in artifact.files:
                shutil.copy2(artifact.path(name), Path(args.out) / name)
    data = artifact.to_dict()
    if args.json:
        _print_json(data)
    else:
        _console().print(f"[green]{args.target}[/] artifact {'(cached) ' if artifact.cached else ''}in {artifact.directory}")
        for name in artifact.files:
            _console().print(f"  {name}  {_human_bytes(artifact.path(name).stat().st_size)}")
    return EXIT_OK


# ------------------------------------------------------------------ zoo
def cmd_zoo(args: argparse.Namespace) -> int:
    from hwdeploy import zoo

    if args.zoo_command == "export":
        _check_writable(args.dest, "export DEST", directory=True)
        with _writing(args.dest, "export DEST"):
            path = zoo.export(args.name, Path(args.dest), format=args.format)
        _console().print(f"exported {args.name} ({args.format}) to {path}")
        return EXIT_OK
    entries = [zoo.entry(name) for name in zoo.names()]
    rows = [{"name": e.name, "task": e.task, "description": e.description, "batch_range": list(e.batch_range),
             "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in e.inputs]} for e in entries]
    if args.json:
        _print_json(rows)
        return EXIT_OK
    from rich.table import Table

    table = Table(title="hwdeploy zoo")
    for column in ("name", "task", "batch", "inputs"):
        table.add_column(column, no_wrap=True)
    table.add_column("description")
    for r in rows:
        inputs = ", ".join(f"{i['name']}: {i['dtype']} {_shape(i['shape'])}" for i in r["inputs"])
        table.add_row(r["name"], r["task"], "{}..{}".format(*r["batch_range"]), inputs, r["description"])
    _console().print(table)
    return EXIT_OK


# ------------------------------------------------------------------ options
def cmd_options(args: argparse.Namespace) -> int:
    import hwdeploy
    from hwdeploy.sdk.options import allowed, markdown

    schemas = [(owner, schema) for owner, schema in hwdeploy.option_schemas()
               if not args.name or args.name in schema.owner]
    if args.name and not schemas:
        from hwdeploy.errors import OptionError

        raise OptionError(f"no option schema matches {args.name!r}; known: "
                          f"{', '.join(s.owner for _o, s in hwdeploy.option_schemas())}")
    if args.json:
        _print_json([{"schema": s.owner, "declared_by": owner, "options": s.describe()} for owner, s in schemas])
        return EXIT_OK
    if args.markdown:
        print(markdown(schemas))
        return EXIT_OK
    from rich.table import Table

    for owner, schema in schemas:
        table = Table(title=f"{schema.owner} ({owner})", title_justify="left")
        for column in ("option", "type", "default", "allowed", "description"):
            table.add_column(column, overflow="fold")
        for row in schema.describe():
            table.add_row(row["name"], row["type"], repr(row["default"]), allowed(row), row["description"])
        _console().print(table)
    return EXIT_OK


def _run_epilog() -> str:
    """The options each backend takes, one line each, for ``hwdeploy run --help`` (from the same schemas)."""
    import hwdeploy

    try:
        schemas = hwdeploy.option_schemas()
    except Exception as exc:  # noqa: BLE001 - help must print whatever a plugin does
        return f"backend options: unavailable ({type(exc).__name__}: {exc})"
    import textwrap

    lines = ["backend options (--option KEY=VALUE; `hwdeploy options` describes each):"]
    for _owner, schema in schemas:
        if schema.owner.endswith(" backend"):
            lines += textwrap.wrap(f"{schema.owner}: {', '.join(sorted(schema.names()))}", width=78,
                                   initial_indent="  ", subsequent_indent="      ")
    return "\n".join(lines)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in every option's help, and an epilog printed as written."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose epilog may be computed when help is shown (``epilog_from``), so that every
    command line does not ask every plugin for its option schemas just in case ``--help`` follows."""

    def __init__(self, *args: Any, epilog_from: Callable[[], str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.epilog_from = epilog_from

    def format_help(self) -> str:
        if self.epilog_from is not None:
            self.epilog = self.epilog_from()
        return super().format_help()


# ------------------------------------------------------------------ parser
def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    from hwdeploy.api import hwdeploy_version

    parser = _Parser(prog="hwdeploy", description="Run Paddle models on whatever accelerator this machine has.")
    parser.add_argument("--version", action="version", version=f"hwdeploy {hwdeploy_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter  # every option's help shows its default
    json_help = "write JSON to stdout (only JSON: native libraries' output goes to stderr)"

    p = sub.add_parser("devices", help="list devices, and why absent kinds are absent", formatter_class=fmt)
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("plugins", help="list plugins: loaded, failed (with the error), incompatible, disabled",
                       formatter_class=fmt)
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("run", help="run a model (default: every zoo model) and show where it really ran",
                       formatter_class=_HelpFormatter, epilog_from=_run_epilog)
    p.add_argument("model", nargs="?", help="model directory, prefix or file, or zoo:NAME (default: the whole zoo)")
    p.add_argument("--device", default="auto",
                   help="auto (best available), auto:fastest, a kind (cpu, gpu, npu...) or KIND:INDEX (gpu:1)")
    p.add_argument("--input", action="append", help=".npy file per input, in input order (repeatable)")
    p.add_argument("--random", action="store_true", help="use generated inputs (the default without --input)")
    p.add_argument("--batch", type=int, default=1, help="batch size of generated inputs")
    p.add_argument("--seed", type=int, default=0, help="seed of generated inputs")
    p.add_argument("--repeat", type=int, default=10, help="timed runs after one warm-up")
    p.add_argument("--fallback", choices=("error", "warn", "allow"), default="error",
                   help="what to do when the runtime's evidence shows the model is not (only) on the device")
    p.add_argument("--option", action="append", help="KEY=VALUE (JSON value) passed to the backend (repeatable)")
    p.add_argument("--precision", help="the backend option precision (fp32, int8, bf16: see `hwdeploy options`)")
    p.add_argument("--calibration", help="int8: calibration data, an .npz with one array per model input")
    p.add_argument("--receipt", help="write the execution receipt(s) to this JSON file")
    p.add_argument("--output", help="save outputs to this .npz file")
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("convert", help="convert a model for a target (cached by content hash)", formatter_class=fmt)
    p.add_argument("model", nargs="?", help="model directory, prefix or file, or zoo:NAME")
    p.add_argument("--target", help="conversion target (see --list)")
    p.add_argument("--option", action="append", help="KEY=VALUE (JSON value) passed to the converter (repeatable)")
    p.add_argument("--out", help="copy the artifact files here")
    p.add_argument("--refresh", action="store_true", help="ignore the cache")
    p.add_argument("--list", action="store_true", help="list conversion targets")
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("options", help="the options of hwdeploy.predictor, auto:fastest and every backend and"
                       " conversion target", formatter_class=fmt)
    p.add_argument("name", nargs="?", help="only schemas whose name contains this (cpu, onnxruntime, conversion...)")
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--markdown", action="store_true", help="write docs/options.md's text")
    p.set_defaults(func=cmd_options)

    p = sub.add_parser("zoo", help="the built-in model zoo", formatter_class=fmt)
    zsub = p.add_subparsers(dest="zoo_command", metavar="list|export")
    zl = zsub.add_parser("list", help="list zoo models", formatter_class=fmt)
    zl.add_argument("--json", action="store_true", help=json_help)
    ze = zsub.add_parser("export", help="export a zoo model to a directory", formatter_class=fmt)
    ze.add_argument("name", help="zoo model name (hwdeploy zoo list)")
    ze.add_argument("dest", help="directory to write NAME.json/.pdmodel + NAME.pdiparams into")
    ze.add_argument("--format", choices=("pir", "legacy"), default="pir", help="Paddle program format")
    p.set_defaults(func=cmd_zoo, zoo_command="list", json=False)

    plugin_commands = {}
    from hwdeploy.contract.manager import get_plugin_manager

    manager = get_plugin_manager()
    for plugin, command in manager.cli_commands(reserved=sub.choices):
        p = sub.add_parser(command.name, help=f"{command.help} (plugin {plugin})")
        try:
            command.configure_parser(p)
        except Exception as exc:  # a broken plugin must not break the CLI: its command says so when used
            manager.record_hook_error(plugin, "hwdeploy_cli_commands", exc)
            p.set_defaults(func=_broken_command(plugin, command.name, exc))
            continue
        p.set_defaults(func=command.run)
        plugin_commands[command.name] = plugin
    return parser, plugin_commands


def _broken_command(plugin: str, name: str, exc: Exception):
    def run(_args: argparse.Namespace) -> int:
        _error(f"command {name!r} of plugin {plugin!r} is broken ({type(exc).__name__}: {exc}); see `hwdeploy plugins`")
        return EXIT_FAIL
    return run


def main(argv: list[str] | None = None) -> int:
    from hwdeploy.errors import HwdeployError

    parser, plugin_commands = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        # A plugin's command writes its own --json output to stdout: only built-in commands print through
        # _print_json, so only they get native output moved off stdout.
        pure_json = getattr(args, "json", False) and args.command not in plugin_commands
        with _stdout_to_stderr() if pure_json else contextlib.nullcontext():
            return int(args.func(args) or 0)
    except HwdeployError as exc:
        _error(f"{type(exc).__name__}: {exc}")
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
