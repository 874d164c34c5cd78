"""pytest plugin (entry point ``pytest11``): ``pytest --hwdeploy-device npu:0 ...``.

For labs that drive everything through pytest: each check of each
(model, precision) case becomes a test item ``conformance[MODEL/PREC/CHECK]``,
so pytest's own ``--junitxml``, ``-k`` selection, ``-x`` and reporting apply.
A case's checks run together in one isolated worker the first time one of
its items runs; expected failures become xfail, skipped/blocked checks skip.

Without ``--hwdeploy-device`` the plugin only adds its options.
"""

from __future__ import annotations

from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hwdeploy-conformance", "hwdeploy conformance suite")
    group.addoption("--hwdeploy-device", metavar="D", help="run the conformance suite on device D (e.g. npu:0)")
    group.addoption("--hwdeploy-backend", default=None, help="the device's backend when several provide its kind")
    group.addoption("--hwdeploy-models", metavar="M", default="zoo",
                    help="comma-separated: zoo, zoo:NAME or model paths (default zoo)")
    group.addoption("--hwdeploy-precision", default="fp32", help="comma-separated precisions (default fp32)")
    group.addoption("--hwdeploy-scope", default="full", choices=("mandatory", "full"))
    group.addoption("--hwdeploy-checks", default=None, help="comma-separated subset of checks")
    group.addoption("--hwdeploy-config", metavar="vendor.toml", default=None, help="vendor config file")
    group.addoption("--hwdeploy-expected-failures", metavar="FILE", default=None, help="expected failures file")
    group.addoption("--hwdeploy-report", metavar="out.json", default=None, help="also write the JSON report")
    group.addoption("--hwdeploy-timeout", type=float, default=None, help="seconds per check before 'hung'")
    group.addoption("--hwdeploy-inputs", action="append", default=[], metavar="[MODEL=]FILE.npz",
                    help="real inputs for a model (as hwdeploy conformance --inputs)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--hwdeploy-device", None):
        config.pluginmanager.register(ConformanceSession(config), "hwdeploy-conformance-session")


def _split(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


class ConformanceFailure(Exception):
    def __init__(self, result: Any):
        super().__init__(result.message)
        self.result = result


class ConformanceSession:
    """Plans the run at collection time and runs cases lazily, one worker per case."""

    def __init__(self, config: pytest.Config):
        from hwdeploy_conformance.cli import inputs_files
        from hwdeploy_conformance.runner import Conformance

        opt = config.getoption
        self.config = config
        self.conformance = Conformance(
            opt("--hwdeploy-device"), _split(opt("--hwdeploy-models")), _split(opt("--hwdeploy-precision")),
            opt("--hwdeploy-scope"), opt("--hwdeploy-config"), opt("--hwdeploy-expected-failures"),
            _split(opt("--hwdeploy-checks")), opt("--hwdeploy-timeout"), backend=opt("--hwdeploy-backend"),
            inputs=inputs_files(opt("--hwdeploy-inputs")))
        self.results: dict[str, Any] = {}
        self.tmp = None

    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        from hwdeploy.errors import HwdeployError
        from hwdeploy_conformance.config import ConfigError

        try:
            self.conformance.resolve()
        except (HwdeployError, ConfigError) as exc:
            raise pytest.UsageError(f"hwdeploy conformance: {exc}") from None
        for model in self.conformance.models:
            for precision in self.conformance.precisions:
                for check in self.conformance.checks:
                    name = f"conformance[{model.name}/{precision}/{check.name}]"
                    items.append(ConformanceItem.from_parent(
                        session, name=name, nodeid=f"hwdeploy-conformance::{name}",
                        path=config.invocation_params.dir / "hwdeploy-conformance", owner=self, model=model,
                        precision=precision, check=check.name))

    def result(self, model: Any, precision: str, check: str) -> Any:
        import tempfile
        import time
        from pathlib import Path

        key = f"{model.name}/{precision}/{check}"
        if key not in self.results:
            if self.tmp is None:
                self.tmp = tempfile.TemporaryDirectory(prefix="hwdeploy-conformance-")
                self.conformance.started = time.time()
            for result in self.conformance.run_case(model, precision, Path(self.tmp.name)):
                self.results[result.id] = result
                self.conformance.results.append(result)
        return self.results[key]

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        import time

        from hwdeploy_conformance.report import build_report, write_json

        path = self.config.getoption("--hwdeploy-report")
        if path and self.conformance.device is not None:
            self.conformance.finished = time.time()
            write_json(build_report(self.conformance, argv=["pytest", *self.config.invocation_params.args]), path)
        if self.tmp is not None:
            self.tmp.cleanup()


class ConformanceItem(pytest.Item):
    def __init__(self, *, owner: ConformanceSession, model: Any, precision: str, check: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.owner, self.model, self.precision, self.check = owner, model, precision, check

    def runtest(self) -> None:
        from hwdeploy_conformance import checks as C

        result = self.owner.result(self.model, self.precision, self.check)
        self.user_properties.append(("status", result.status))
        if result.outcome == C.XFAIL:
            pytest.xfail(f"expected failure ({result.expected_failure}): {result.status}: {result.message}")
        if result.outcome in (C.SKIP, C.NOT_RUN):
            pytest.skip(result.message or result.status)
        if result.outcome == C.FAIL:
            raise ConformanceFailure(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ConformanceFailure):
            r = excinfo.value.result
            lines = [f"{r.id}: {r.status}: {r.message}"] + [f"  {e}" for e in r.evidence[:10]]
            if r.stderr_tail:
                lines += ["--- stderr tail ---", r.stderr_tail]
            return "\n".join(lines)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name
