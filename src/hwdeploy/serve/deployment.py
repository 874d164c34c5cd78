"""The Ray Serve deployment: one hwdeploy predictor per replica, the Open Inference Protocol over HTTP.

Routes (KServe v2 / Triton HTTP; ``{name}`` is the served model's name, ``/versions/1`` may follow it)::

    GET  /v2                          server metadata
    GET  /v2/health/live              200 while the replica's event loop answers
    GET  /v2/health/ready             200 once warmed up and healthy, else 503
    GET  /v2/models/{name}            model metadata (inputs, outputs, content hash, device)
    GET  /v2/models/{name}/ready      as /v2/health/ready, for this model
    POST /v2/models/{name}/infer      inference (JSON tensors or the binary-data extension)
    GET  /v2/models/{name}/receipt    this replica's hwdeploy execution receipt and its Ray placement

Every infer response carries the request id (``id`` and ``X-Request-Id``) and, in ``parameters``, the
model's content hash and the replica's device, so a fleet proves which version answered where.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

import hwdeploy
from hwdeploy.api import PREDICTOR_OPTIONS
from hwdeploy.errors import HwdeployError, OptionError
import hwdeploy.serve.batching as batching
import hwdeploy.serve.protocol as protocol
from hwdeploy.serve.resources import ray_resources, replica_device

#: Serve's replica logger: its lines already carry the application, deployment, replica and Serve's request id.
log = logging.getLogger("ray.serve")

LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(doc), status_code=status, media_type="application/json", headers=headers)


def _keep_internal_grpc_on_loopback() -> None:
    """On a node whose address is loopback, bind Serve's per-replica gRPC server there too.

    Ray Serve 2.60 binds each replica's inter-deployment gRPC server to ``[::]:0`` (every interface)
    whatever the node address; Ray's own servers follow the node address. On a loopback node no other
    node can reach the replica anyway, so binding it to loopback changes nothing but what is exposed.
    """
    node_ip = ray.util.get_node_ip_address()
    try:
        if not ipaddress.ip_address(node_ip).is_loopback:
            return
    except ValueError:
        return
    try:
        from ray.serve._private import replica as replica_module
    except ImportError:
        return
    original = getattr(replica_module, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "_hwdeploy_loopback", False):
        return

    def bind(server, address):
        if isinstance(address, str) and address.startswith("[::]:"):
            address = f"{node_ip}:{address[5:]}"
        return original(server, address)

    bind._hwdeploy_loopback = True
    replica_module.add_port_to_grpc_server = bind


class ModelServer:
    """One replica: builds the predictor, warms it up, answers the Open Inference Protocol."""

    def __init__(self, config: dict[str, Any]):
        _keep_internal_grpc_on_loopback()
        self.config = config
        self.name = config["name"]
        context = ray.get_runtime_context()
        self.accelerator_ids = context.get_accelerator_ids()
        self.device_request = config["device"]
        device = replica_device(config["device"], self.accelerator_ids)
        try:
            replica = serve.get_replica_context().replica_tag
        except Exception:  # outside Serve (tests calling the class directly)
            replica = ""
        self.replica = replica
        self.placement = {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                          "accelerator_ids": {k: list(v) for k, v in self.accelerator_ids.items() if v},
                          "replica": replica, "pid": os.getpid(), "resources": config.get("resources", {})}
        # fallback="error" raises FallbackError here: the replica never starts, the deployment fails with it.
        self.predictor = hwdeploy.predictor(config["model"], device=device, fallback=config["fallback"],
                                            backend=config.get("backend"), **config.get("options", {}))
        self.model_sha256 = self.predictor.model.sha256
        self.device = self.predictor.device.id
        self.output_names = list(self.predictor.output_names)
        self.batchable = bool(self.predictor.inputs) and all(
            len(s.shape) >= 1 and s.shape[0] == -1 for s in self.predictor.inputs)
        batch_range = (self.predictor.model.metadata or {}).get("batch_range")
        self.max_rows = config.get("max_batch_rows") or (int(batch_range[1]) if batch_range else None)
        self.max_batch_size = int(config.get("max_batch_size", 32))
        if self.max_batch_size > 1:
            self._infer_batch.set_max_batch_size(self.max_batch_size)
            self._infer_batch.set_batch_wait_timeout_s(float(config.get("batch_wait_ms", 10)) / 1000)
        self.max_request_bytes = int(config.get("max_request_bytes", 64 << 20))
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hwdeploy-predictor")
        self._init_metrics()
        # Readiness only after a warm-up run on the device (first runs build kernels, caches, engines).
        from hwdeploy.sdk.inputs import random_inputs

        self.predictor.run(*random_inputs(self.predictor.inputs, batch=1))
        self.receipt = self.predictor.receipt()
        self.unhealthy_reason = self._health_problem(self.receipt)
        if self.unhealthy_reason:
            self._fallback_refusals.inc(tags=self._tags)
            raise RuntimeError(f"replica of {self.name!r} is unhealthy after warm-up: {self.unhealthy_reason}")
        if self.receipt.fell_back:
            log.warning("hwdeploy model %s on %s falls back (policy %s allows it): %s", self.name, self.device,
                        config["fallback"], "; ".join(self.receipt.fallback_reasons()))
        self.ready = True
        log.info("hwdeploy model %s sha256=%s ready on %s (requested %s, placement %s)", self.name,
                 self.model_sha256[:12], self.device, self.device_request, self.placement)

    # ----------------------------------------------------------------- health
    def _health_problem(self, receipt) -> str:
        if receipt.fell_back and self.config["fallback"] == "error":
            return "the receipt shows fallback: " + "; ".join(receipt.fallback_reasons())
        return ""

    async def check_health(self) -> None:
        """Called by Serve periodically: a replica whose receipt shows a forbidden fallback is restarted."""
        loop = asyncio.get_running_loop()
        self.receipt = await loop.run_in_executor(self._executor, self.predictor.receipt)
        self.unhealthy_reason = self._health_problem(self.receipt)
        if self.unhealthy_reason:
            self._fallback_refusals.inc(tags=self._tags)
            raise RuntimeError(self.unhealthy_reason)

    # ---------------------------------------------------------------- metrics
    def _init_metrics(self) -> None:
        from ray.serve.metrics import Counter, Histogram

        self._tags = {"model": self.name, "device": self.device}
        keys = ("model", "device")
        self._requests = Counter("hwdeploy_requests", description="Inference requests answered", tag_keys=keys)
        self._errors = Counter("hwdeploy_request_errors", description="Failed inference requests by error kind",
                               tag_keys=keys + ("kind",))
        self._latency = Histogram("hwdeploy_request_latency_ms", description="Inference request latency (ms)",
                                  boundaries=LATENCY_BOUNDARIES_MS, tag_keys=keys)
        self._batch_size = Histogram("hwdeploy_batch_size", description="Requests per predictor run",
                                     boundaries=BATCH_BOUNDARIES, tag_keys=keys)
        self._fallback_refusals = Counter("hwdeploy_fallback_refusals",
                                          description="Health checks failed because the receipt shows fallback",
                                          tag_keys=keys)

    # --------------------------------------------------------------- running
    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return self.predictor.run(*arrays)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _infer_batch(self, requests: list[list[np.ndarray]]) -> list:
        sizes: list[int] = []
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._executor, batching.run_batched, self._run, requests,
                                             self.max_rows, lambda n, _rows: sizes.append(n))
        for n in sizes:
            self._batch_size.observe(n, tags=self._tags)
        return results

    async def _infer(self, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
        """The request's outputs and how many requests shared the predictor run that produced them."""
        if self.max_batch_size > 1 and self.batchable:
            result = await self._infer_batch(arrays)
        else:
            loop = asyncio.get_running_loop()
            result = (await loop.run_in_executor(self._executor, self._run, arrays), 1)
            self._batch_size.observe(1, tags=self._tags)
        if isinstance(result, Exception):
            raise result
        return result

    def _parameters(self) -> dict[str, Any]:
        params = {"hwdeploy_model_sha256": self.model_sha256, "hwdeploy_device": self.device,
                  "hwdeploy_replica": self.replica}
        if self.receipt.fell_back:
            params["hwdeploy_fell_back"] = True
        return params

    # ------------------------------------------------------------------ HTTP
    async def __call__(self, request: Request) -> Response:
        parts = [p for p in request.url.path.split("/") if p]
        if "v2" in parts:  # behind a route prefix ("/app/v2/...")
            parts = parts[parts.index("v2"):]
        if parts[:1] != ["v2"]:
            return _json({"error": f"not found: {request.url.path}"}, 404)
        rest = parts[1:]
        if not rest:
            return _json({"name": "hwdeploy", "version": hwdeploy_version(), "extensions": ["binary_tensor_data"]})
        if rest == ["health", "live"]:
            return _json({"live": True})
        if rest == ["health", "ready"]:
            return self._ready_response()
        if rest[0] != "models" or len(rest) < 2:
            return _json({"error": f"not found: {request.url.path}"}, 404)
        name, rest = rest[1], rest[2:]
        if name != self.name:
            return _json({"error": f"unknown model {name!r}; this server serves {self.name!r}"}, 404)
        if rest[:1] == ["versions"]:
            if len(rest) < 2 or rest[1] != "1":
                return _json({"error": f"model {name!r} has only version 1"}, 404)
            rest = rest[2:]
        if not rest:
            return _json(self._metadata())
        if rest == ["ready"]:
            return self._ready_response()
        if rest == ["receipt"]:
            return _json({"receipt": self.receipt.to_dict(), "placement": self.placement,
                          "parameters": self._parameters()})
        if rest == ["infer"]:
            if request.method != "POST":
                return _json({"error": "infer takes POST"}, 405)
            return await self._handle_infer(request)
        return _json({"error": f"not found: {request.url.path}"}, 404)

    def _ready_response(self) -> Response:
        if self.ready and not self.unhealthy_reason:
            return _json({"ready": True, "device": self.device, "model_sha256": self.model_sha256})
        return _json({"ready": False, "error": self.unhealthy_reason or "warming up"}, 503)

    def _metadata(self) -> dict[str, Any]:
        return {"name": self.name, "versions": ["1"], "platform": f"hwdeploy/{self.predictor.receipt().backend}",
                "inputs": protocol.tensor_metadata(self.predictor.inputs),
                "outputs": protocol.tensor_metadata(self.predictor.outputs),
                "parameters": self._parameters()}

    async def _handle_infer(self, request: Request) -> Response:
        start = time.perf_counter()
        request_id = request.headers.get("x-request-id", "")
        try:
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.max_request_bytes:
                raise protocol.ProtocolError(f"request of {declared} bytes exceeds the limit of"
                                             f" {self.max_request_bytes} bytes")
            body = await request.body()
            infer = protocol.parse_infer_request(body, request.headers.get(protocol.HEADER_LENGTH),
                                                 max_bytes=self.max_request_bytes)
            request_id = infer.id = infer.id or request_id or uuid.uuid4().hex
            if infer.outputs is not None:
                unknown = [n for n in infer.outputs if n not in self.output_names]
                if unknown:
                    raise protocol.ProtocolError(f"unknown output(s) {unknown}; the model's outputs are"
                                                 f" {self.output_names}")
            arrays = self.predictor.prepare_inputs((infer.inputs,), {})
            outputs, shared = await self._infer(arrays)
            payload, headers = protocol.encode_infer_response(infer, self.name, self.output_names, outputs,
                                                              {**self._parameters(), "hwdeploy_batch_requests": shared})
        except HwdeployError as exc:
            return self._error(request_id, exc, 400, start)
        except Exception as exc:  # a runtime failure: the client gets a clear 5xx, the replica keeps serving
            return self._error(request_id, exc, 500, start)
        elapsed = (time.perf_counter() - start) * 1000
        self._requests.inc(tags=self._tags)
        self._latency.observe(elapsed, tags=self._tags)
        log.info("hwdeploy infer id=%s model=%s sha256=%s device=%s rows=%s %.1fms", request_id, self.name,
                 self.model_sha256[:12], self.device, arrays[0].shape[0] if arrays and arrays[0].ndim else 1, elapsed)
        headers["x-request-id"] = request_id
        return Response(payload, status_code=200, headers=headers)

    def _error(self, request_id: str, exc: Exception, status: int, start: float) -> Response:
        kind = type(exc).__name__
        self._errors.inc(tags={**self._tags, "kind": kind})
        self._latency.observe((time.perf_counter() - start) * 1000, tags=self._tags)
        (log.info if status < 500 else log.error)("hwdeploy infer id=%s model=%s sha256=%s device=%s error %d %s: %s",
                                                 request_id or "-", self.name, self.model_sha256[:12], self.device,
                                                 status, kind, exc)
        doc = {"error": f"{kind}: {exc}", "parameters": self._parameters()}
        if request_id:
            doc["id"] = request_id
        return _json(doc, status, {"x-request-id": request_id} if request_id else None)


def hwdeploy_version() -> str:
    try:
        from importlib.metadata import version

        return version("hwdeploy")
    except Exception:
        return "unknown"


def model_name(model: Any) -> str:
    """A served model's default name: ``zoo:mlp`` -> ``mlp``, ``dir/model.json`` -> ``model``."""
    if isinstance(model, hwdeploy.Model):
        return model.name or model.program.stem
    if isinstance(model, tuple):
        model = model[0]
    text = str(model).rstrip("/")
    if ":" in text and not text.startswith("/"):
        return text.split(":", 1)[1]
    from pathlib import PurePath

    path = PurePath(text)
    return path.stem if path.suffix in (".json", ".pdmodel") else path.name


def build_app(model: Any, device: str = "cpu", *, name: str | None = None, backend: str | None = None,
              fallback: str = "error", options: dict[str, Any] | None = None, replicas: int = 1,
              max_batch_size: int = 32, batch_wait_ms: float = 10, max_batch_rows: int | None = None,
              max_request_bytes: int = 64 << 20, health_check_period_s: float = 10,
              deployment_name: str = "hwdeploy", ray_actor_options: dict[str, Any] | None = None,
              request_logs: bool = True):
    """A Ray Serve application serving ``model`` on ``device``, one predictor per replica.

    - ``device``/``backend``/``fallback``/``options``: what :func:`hwdeploy.predictor` gets in each replica
      (``options["threads"]`` also sets the replica's ``num_cpus``).
    - ``replicas``: replica count; each reserves one device through :func:`~hwdeploy.serve.ray_resources`.
    - ``max_batch_size``/``batch_wait_ms``: ``@serve.batch`` settings (1 turns batching off);
      ``max_batch_rows``: most rows per run (default: the model's batch range, when the zoo gives one).
    - ``max_request_bytes``: larger requests are refused with HTTP 400.
    - ``request_logs=False``: no per-request log lines (Serve's access log, hwdeploy's ``infer`` line; warnings
      and errors stay): each line is written by the replica and shipped by Ray's log monitor, on the cores that
      run the model (``benchmarks/test_bench_serve.py`` measures the difference).

    Run it with ``serve.run(app, route_prefix="/")``. A model given as a path or ``zoo:NAME`` is opened
    by each replica (on a cluster, the path must exist on every node).
    """
    PREDICTOR_OPTIONS.check({"fallback": fallback, "backend": backend})  # what every replica's predictor() checks
    if not isinstance(replicas, int) or replicas < 1:
        raise OptionError(f"replicas must be a positive integer, got {replicas!r}")
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise OptionError(f"max_batch_size must be a positive integer, got {max_batch_size!r}")
    if batch_wait_ms < 0:
        raise OptionError(f"batch_wait_ms must be >= 0, got {batch_wait_ms!r}")
    options = dict(options or {})
    resources = ray_resources(device, threads=options.get("threads"))
    if isinstance(model, (hwdeploy.Model, tuple)):
        model_ref: Any = model  # pickled to each replica as it is (a Model keeps its metadata: batch range)
    else:
        model_ref = str(model)
    config = {"model": model_ref, "name": name or model_name(model), "device": device, "backend": backend,
              "fallback": fallback, "options": options, "max_batch_size": max_batch_size,
              "batch_wait_ms": batch_wait_ms, "max_batch_rows": max_batch_rows,
              "max_request_bytes": max_request_bytes, "resources": resources}
    actor_options = {**resources, **(ray_actor_options or {})}
    deployment = serve.deployment(ModelServer, name=deployment_name).options(
        num_replicas=replicas, ray_actor_options=actor_options,
        max_ongoing_requests=max(2 * max_batch_size, 16), health_check_period_s=health_check_period_s,
        health_check_timeout_s=max(30.0, health_check_period_s),
        **({} if request_logs else {"logging_config": {"log_level": "WARNING", "enable_access_log": False}}))
    return deployment.bind(config)
