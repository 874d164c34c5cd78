"""hwdeploy's ``serve`` subcommand, registered through the ``hwdeploy_cli_commands`` hook.

This module is loaded with every plugin (``hwdeploy devices`` too), so it imports neither Ray nor
anything heavy: :mod:`hwdeploy.serve.cli` is imported only when ``hwdeploy serve`` runs.
"""

from __future__ import annotations

import argparse

from hwdeploy.contract.hookspecs import hookimpl
from hwdeploy.contract.records import CliCommand

HELP = "serve a model over HTTP (Open Inference Protocol) on Ray Serve, one device per replica"


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model directory, prefix or file, or zoo:NAME")
    p.add_argument("--device", default="cpu", help="device of every replica (cpu, gpu, npu, a plugin's kind)")
    p.add_argument("--backend", help="restrict to devices of one backend")
    p.add_argument("--fallback", choices=("error", "warn", "allow"), default="error",
                   help="a replica whose receipt shows fallback fails (error) or serves anyway (warn, allow)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="predictor option, VALUE as JSON (repeatable), e.g. threads=2")
    p.add_argument("--name", help="model name in the URLs (default: from the model)")
    p.add_argument("--replicas", type=int, default=1, help="number of replicas")
    p.add_argument("--max-batch-size", type=int, default=32, help="most requests per batch (1: no batching)")
    p.add_argument("--batch-wait-ms", type=float, default=10, help="how long a batch waits to fill")
    p.add_argument("--no-request-logs", action="store_true",
                   help="no log line per request (warnings and errors stay): less CPU next to the model")
    p.add_argument("--host", default="127.0.0.1", help="HTTP address (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join: auto (the running one) or ray://HOST:PORT; default: start a"
                        " local Ray instance bound to 127.0.0.1")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")


def run(args: argparse.Namespace) -> int:
    import importlib.util
    import sys

    try:  # found without importing: Ray must read RAY_* variables the command sets first
        missing = [m for m in ("ray", "ray.serve", "starlette") if importlib.util.find_spec(m) is None]
    except (ImportError, ValueError):
        missing = ["ray"]
    if missing:
        print(f"hwdeploy serve needs Ray Serve (missing: {', '.join(missing)}): pip install 'hwdeploy[serve]'",
              file=sys.stderr)
        return 2
    from hwdeploy.serve.cli import serve_main

    return serve_main(args)


@hookimpl
def hwdeploy_cli_commands() -> list[CliCommand]:
    return [CliCommand("serve", HELP, configure_parser, run)]
