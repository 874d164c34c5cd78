"""Fixtures: small models, the fault-injection plugins installed through real entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwdeploy.sdk.testing import install_plugin, plugins_on_path

HERE = Path(__file__).parent
FAULT_PLUGINS = ["faultgpu", "faultliar", "faultdrift", "faultbatchdrift", "faultabort", "faultsegv", "faulthang",
                 "faultnondet", "faultcheat", "faultrss", "faultcache"]

# A real vendor config file: small settings so each worker finishes in seconds.
VENDOR_TOML = """
[models.mlp]
task = "classification"
batch_range = [1, 4]

[models.seqreg]
task = "regression"
batch_range = [1, 3]
[models.seqreg.inputs.ids]
range = [0, 49]

[checks]
examples = 6
timeout = 60
setup_timeout = 300
max_restarts = 1
perf_seconds = 0.3
perf_iterations = 100
utilization_seconds = 0.3
timing_pairs = 10
caching_pairs = 20
concurrency_threads = 4
concurrency_runs = 4
lifecycle_cycles = 6
lifecycle_warmup = 2
"""


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """mlp (classifier), seqreg (int64 ids), tinyscale (outputs ~1e-8): built once, in a subprocess."""
    out = tmp_path_factory.mktemp("models")
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="2")
    proc = subprocess.run([sys.executable, str(HERE / "make_models.py"), str(out)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {name: out / name for name in ("mlp", "seqreg", "tinyscale")}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One hwdeploy cache for the session (probe results, optimized programs), unless one is set already."""
    return tmp_path_factory.mktemp("hwdeploy-cache")


@pytest.fixture(scope="module")
def fault_env(tmp_path_factory, cache_dir):
    """Every fault plugin installed (dist-info + entry point) in a site dir on sys.path and PYTHONPATH.

    Worker subprocesses inherit PYTHONPATH, so they load the plugins through
    hwdeploy's real entry-point path too.
    """
    site = tmp_path_factory.mktemp("site")
    (site / "hwdeploy_test_faultkit.py").write_text((HERE / "fault_plugins" / "faultkit.py").read_text())
    for name in FAULT_PLUGINS:
        install_plugin(site, name, (HERE / "fault_plugins" / f"{name}.py").read_text(),
                       requires=["hwdeploy>=0.1,<0.2"], module=f"hwdeploy_test_{name}")
    config = site / "vendor.toml"
    config.write_text(VENDOR_TOML)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("GLOG_minloglevel", "2")
        if not os.environ.get("HWDEPLOY_CACHE_DIR"):  # tox shares one cache between envs: keep it
            mp.setenv("HWDEPLOY_CACHE_DIR", str(cache_dir))
        with plugins_on_path(site):
            yield {"site": site, "config": config}


@pytest.fixture(scope="module")
def run_suite(fault_env, models, tmp_path_factory):
    """run_suite(device, [model names], **Conformance kwargs) -> the JSON report (also written with JUnit)."""
    from hwdeploy_conformance import Conformance, build_report, write_json, write_junit

    out = tmp_path_factory.mktemp("reports")

    def run(device: str, names=("mlp",), **kwargs):
        kwargs.setdefault("config", fault_env["config"])
        conformance = Conformance(device, [str(models[n]) for n in names], **kwargs)
        conformance.run()
        report = build_report(conformance)
        stem = device.replace(":", "_")
        write_json(report, out / f"{stem}.json")
        write_junit(report, out / f"{stem}.xml")
        report["_paths"] = (out / f"{stem}.json", out / f"{stem}.xml")
        return report

    return run
