"""``hwdeploy serve``: start (or join) Ray, run the application, wait for Ctrl-C. Imported only when used."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from hwdeploy.sdk.options import parse_option_pairs


def start_local_ray(num_cpus: int | None = None) -> None:
    """A local Ray instance whose every server listens on 127.0.0.1 only.

    Ray replaces a loopback ``_node_ip_address`` by the machine's address unless it runs "single machine"
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the mode Ray uses on laptops); the variable must be set
    before Ray reads its constants, and is inherited by every Ray process.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray._private import ray_constants

    if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] in ("0", "false", "False"):
        ray_constants.ENABLE_RAY_CLUSTER = False  # in case Ray was imported before the variable was set

    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="WARNING", log_to_driver=True)


def serve_main(args: argparse.Namespace) -> int:
    if not args.address:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray reads its constants
    import ray
    from ray import serve

    from hwdeploy.serve.deployment import build_app, model_name

    options = parse_option_pairs(args.option)
    app = build_app(args.model, args.device, name=args.name, backend=args.backend, fallback=args.fallback,
                    options=options, replicas=args.replicas, max_batch_size=args.max_batch_size,
                    batch_wait_ms=args.batch_wait_ms, request_logs=not args.no_request_logs)
    if args.address:
        ray.init(address=args.address, logging_level="WARNING")
    else:
        start_local_ray(args.num_cpus)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(app, route_prefix="/", name="hwdeploy")
        name = args.name or model_name(args.model)
        base = f"http://{args.host}:{args.port}"
        print(f"hwdeploy serve: {name} on {args.device} x{args.replicas} ready at {base}/v2/models/{name}"
              f" (receipt: {base}/v2/models/{name}/receipt); Ctrl-C stops", flush=True)
        stop.wait()
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    return 0
