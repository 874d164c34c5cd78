"""hwdeploy-conformance: certify that a device computes the right numbers where it claims to.

Command line: ``hwdeploy conformance --device npu:0 --report out.json --junit out.xml``.
Python::

    from hwdeploy_conformance import Conformance, build_report
    run = Conformance("npu:0", models=["zoo:resnet18"], precisions=["fp32", "fp16"])
    run.run()
    report = build_report(run)

Importing this package does not import Paddle; device work happens in worker processes.
"""

from hwdeploy_conformance.checks import CHECKS
from hwdeploy_conformance.config import DEFAULT_TOLERANCES, Tolerance, load_config, load_expected_failures
from hwdeploy_conformance.report import build_report, write_json, write_junit
from hwdeploy_conformance.runner import CheckResult, Conformance

__all__ = ["CHECKS", "CheckResult", "Conformance", "DEFAULT_TOLERANCES", "Tolerance", "build_report",
           "load_config", "load_expected_failures", "write_json", "write_junit"]
