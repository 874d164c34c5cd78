"""Serving hwdeploy predictors on Ray Serve (``pip install 'hwdeploy[serve]'``).

    from ray import serve
    from hwdeploy.serve import build_app

    serve.run(build_app("zoo:mobilenet_v2", device="cpu", replicas=2), route_prefix="/")

One hwdeploy predictor per replica, each replica holding one device through Ray's resources
(:func:`ray_resources`); the Open Inference Protocol (KServe / Triton v2) over HTTP, so ``tritonclient``
and KServe clients work unchanged; dynamic batching with ``@serve.batch``; health that means "the
receipt shows no fallback the policy forbids"; Prometheus metrics through Ray's metrics API. Offline
scoring: :class:`hwdeploy.serve.data.BatchPredictor` for Ray Data ``map_batches``.

Importing this package does not import Ray; :func:`build_app` does.
"""

from __future__ import annotations

from typing import Any

from hwdeploy.serve.resources import ray_resources

__all__ = ["build_app", "ray_resources"]


def build_app(*args: Any, **kwargs: Any):
    """A Ray Serve application serving one model (see :func:`hwdeploy.serve.deployment.build_app`)."""
    from hwdeploy.serve.deployment import build_app as build

    return build(*args, **kwargs)
