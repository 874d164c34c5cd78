"""Offline scoring with Ray Data: a callable class for ``Dataset.map_batches``, one predictor per worker.

    import ray
    from hwdeploy.serve.data import BatchPredictor

    scored = ds.map_batches(BatchPredictor, fn_constructor_args=("zoo:mlp",),
                            fn_constructor_kwargs={"device": "cpu"}, batch_format="numpy",
                            concurrency=2, **BatchPredictor.resources("cpu"))

Each batch is a dict of numpy columns named after the model's inputs (rows on axis 0); the result
keeps every input column and adds one column per output, plus ``hwdeploy_device`` and
``hwdeploy_model_sha256`` for each row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hwdeploy.serve.resources import ray_resources


class BatchPredictor:
    """``map_batches`` callable class: builds one hwdeploy predictor per Ray Data worker."""

    def __init__(self, model: Any, device: str = "cpu", *, fallback: str = "error", backend: str | None = None,
                 keep_inputs: bool = True, **options: Any):
        import hwdeploy

        try:
            import ray

            from hwdeploy.serve.resources import replica_device

            device = replica_device(device, ray.get_runtime_context().get_accelerator_ids())
        except Exception:  # outside a Ray worker: the device as given
            pass
        self.predictor = hwdeploy.predictor(model, device=device, fallback=fallback, backend=backend, **options)
        self.keep_inputs = keep_inputs
        self.device = self.predictor.device.id
        self.sha256 = self.predictor.model.sha256

    @staticmethod
    def resources(device: str, *, threads: int | None = None) -> dict[str, Any]:
        """``num_cpus``/``num_gpus``/``resources`` for ``map_batches``: the same mapping as serving replicas."""
        return ray_resources(device, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {name: np.asarray(batch[name]) for name in self.predictor.input_names if name in batch}
        outputs = self.predictor.run(inputs)  # InputError names a missing or mismatched column
        rows = len(next(iter(inputs.values())))
        result = dict(batch) if self.keep_inputs else {}
        for name, array in zip(self.predictor.output_names, outputs):
            result[name] = array
        result["hwdeploy_device"] = np.full(rows, self.device)
        result["hwdeploy_model_sha256"] = np.full(rows, self.sha256)
        return result
