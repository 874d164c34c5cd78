"""The lab scoreboard: ``hwdeploy conformance merge REPORT... --out DIR``.

The reports are real: ``hwdeploy conformance`` runs (CPU reference and fault plugins installed through real
entry points, the zoo's mlp, mandatory scope) on two "machines" (``HWDEPLOY_LAB_MACHINE``) and with two
versions of one vendor plugin. They run once per session; every test merges them its own way. The page is
checked in headless Chromium (Debian's, driven by Playwright through ``executable_path``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hwdeploy.sdk.testing import install_plugin
from hwdeploy_conformance import checks as C
from hwdeploy_conformance import provenance as P
from hwdeploy_conformance import scoreboard as S

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
FAULTS = HERE / "fault_plugins"
SCREENSHOT = HERE.parent / "docs" / "scoreboard.png"
MODEL = "zoo:mlp"
CELL = "mlp/fp32"

CONFIG = """
[checks]
examples = 3
timeout = {timeout}
setup_timeout = 300
max_restarts = 1
perf_seconds = 0.2
perf_iterations = 50
utilization_seconds = 0.3
timing_pairs = 8
"""


def labnpu_source(relative: float) -> str:
    """A vendor plugin "labnpu": the faultdrift fixture under another kind; 1.0 drifts by 1e-3, 1.1 is fixed."""
    source = (FAULTS / "faultdrift.py").read_text()
    assert 'KIND = "faultdrift"' in source and "relative=1e-3" in source
    return source.replace('KIND = "faultdrift"', 'KIND = "labnpu"').replace("relative=1e-3", f"relative={relative}")


def make_site(root: Path, labnpu_version: str, relative: float) -> Path:
    site = root / f"site-{labnpu_version}"
    site.mkdir()
    (site / "hwdeploy_test_faultkit.py").write_text((FAULTS / "faultkit.py").read_text())
    install_plugin(site, "labnpu", labnpu_source(relative), requires=["hwdeploy>=0.1,<0.2"],
                   version=labnpu_version, module="hwdeploy_test_labnpu")
    for name in ("faultsegv", "faulthang"):
        install_plugin(site, name, (FAULTS / f"{name}.py").read_text(), requires=["hwdeploy>=0.1,<0.2"],
                       module=f"hwdeploy_test_{name}")
    return site


#: name -> (machine, device, labnpu version, extra CLI arguments)
RUNS = {
    "cpu-a": ("lab-a", "cpu", "1.0", ["--precision", "fp32,fp16"]),
    "npu10-a": ("lab-a", "labnpu", "1.0", []),
    "npu11-a": ("lab-a", "labnpu", "1.1", []),
    "npu10-b": ("lab-b", "labnpu", "1.0", ["--expected-failures", "{xfail}"]),
    "segv-b": ("lab-b", "faultsegv", "1.0", []),
    "hang-b": ("lab-b", "faulthang", "1.0", ["--config", "{hang_config}"]),
    "subset-c": ("lab-c", "cpu", "1.0", ["--checks", "parity"]),
}


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> dict[str, Path]:
    """Real reports, one ``hwdeploy conformance`` run each (mandatory scope, zoo:mlp), written as a lab would."""
    root = tmp_path_factory.mktemp("lab")
    sites = {"1.0": make_site(root, "1.0", 1e-3), "1.1": make_site(root, "1.1", 0.0)}
    config, hang_config = root / "vendor.toml", root / "vendor-hang.toml"
    config.write_text(CONFIG.format(timeout=120))
    hang_config.write_text(CONFIG.format(timeout=4))
    xfail = root / "expected-labnpu.txt"
    xfail.write_text("mlp/fp32/parity   # drift of 1e-3, ticket LAB-1\n")
    cache = os.environ.get("HWDEPLOY_CACHE_DIR") or str(tmp_path_factory.mktemp("hwdeploy-cache"))
    reports, logs = {}, []
    for name, (machine, device, version, extra) in RUNS.items():
        extra = [a.format(xfail=xfail, hang_config=hang_config) for a in extra]
        if "--config" not in extra:
            extra += ["--config", str(config)]
        out = root / f"{name}.json"
        env = dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="2", HWDEPLOY_CACHE_DIR=cache,
                   HWDEPLOY_LAB_MACHINE=machine,
                   PYTHONPATH=os.pathsep.join(filter(None, [str(sites[version]), os.environ.get("PYTHONPATH")])))
        proc = subprocess.run([sys.executable, "-m", "hwdeploy", "conformance", "--device", device, "--models", MODEL,
                               "--scope", "mandatory", "--report", str(out), "--no-progress", *extra],
                              capture_output=True, text=True, env=env, timeout=600, cwd=root)
        logs.append(f"== {name}: rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        assert out.exists(), "\n".join(logs)
        reports[name] = out
    (root / "runs.log").write_text("\n".join(logs))
    return reports


def merge_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwdeploy", "conformance", "merge", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def row(board, key):
    return next(r for r in board["rows"] if r["row"] == key)


def created(path: Path) -> dt.datetime:
    return dt.datetime.strptime(json.loads(path.read_text())["created"], "%Y-%m-%dT%H:%M:%S%z")


# --------------------------------------------------------------------------------------------- the reports
def test_real_reports_follow_the_schema_with_digest_and_fingerprint(lab):
    for name, path in lab.items():
        report = json.loads(path.read_text())
        assert S.schema_errors(report) == [], name
        assert P.verify_digest(report) is None, name
        machine, device, version, _ = RUNS[name]
        env = report["environment"]
        assert env["host"] == machine == report["host"]["hostname"]
        assert env["os"] and env["cpu"] and env["hwdeploy"] and env["runtime"].get("paddlepaddle"), env
        assert env["plugin"]["name"] == report["plugin"]["name"]
    assert json.loads(lab["npu10-a"].read_text())["plugin"]["version"] == "1.0"
    assert json.loads(lab["npu11-a"].read_text())["plugin"]["version"] == "1.1"
    # The digest is over canonical JSON: re-indenting or reordering keys keeps it, one changed value breaks it.
    report = json.loads(lab["cpu-a"].read_text())
    shuffled = json.loads(json.dumps(dict(reversed(list(report.items()))), indent=4))
    assert P.verify_digest(shuffled) is None
    shuffled["checks"][0]["duration_s"] += 1e-9
    assert "does not match" in P.verify_digest(shuffled)


def test_schema_enums_match_the_check_catalogue():
    schema = S.report_schema()
    check = schema["properties"]["checks"]["items"]["properties"]
    assert set(check["status"]["enum"]) == {C.PASSED, C.FAILED, C.CRASHED, C.HUNG, C.ERROR, C.BLOCKED, C.SKIPPED}
    assert set(check["outcome"]["enum"]) == {C.PASS, C.FAIL, C.XFAIL, C.XPASS, C.SKIP, C.NOT_RUN}
    assert set(check["scope"]["enum"]) == set(C.SCOPES)
    assert schema["properties"]["schema"]["const"] == "hwdeploy-conformance-report"


# --------------------------------------------------------------------------------------------- rejection
def test_truncated_hand_edited_and_incomplete_reports_are_rejected_and_the_rest_merged(lab, tmp_path):
    truncated = tmp_path / "truncated.json"
    text = lab["cpu-a"].read_text()
    truncated.write_text(text[: len(text) // 2])
    edited = tmp_path / "edited.json"  # a failed parity turned into a pass, by hand
    report = json.loads(lab["npu10-a"].read_text())
    parity = next(c for c in report["checks"] if c["check"] == "parity")
    assert parity["status"] == "failed"
    parity.update(status="passed", outcome="pass", message="ok")
    edited.write_text(json.dumps(report, indent=1))
    offschema = tmp_path / "offschema.json"  # a writer bug, not tampering: the digest is right, the shape is not
    report = json.loads(lab["cpu-a"].read_text())
    report["checks"][0]["status"] = "PASSED"
    offschema.write_text(json.dumps(P.with_digest(report)))
    nodigest = tmp_path / "nodigest.json"
    report = json.loads(lab["cpu-a"].read_text())
    del report["digest"]
    nodigest.write_text(json.dumps(report))

    out = tmp_path / "board"
    good = [lab[n] for n in ("cpu-a", "npu10-a", "npu10-b", "segv-b", "hang-b")]
    proc = merge_cli(*good, truncated, edited, offschema, nodigest, lab["subset-c"], "--out", out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rejected ")]
    assert len(lines) == 5, proc.stderr
    reasons = {Path(r["path"]).name: r for r in json.loads((out / "scoreboard.json").read_text())["rejected"]}
    assert reasons["truncated.json"]["kind"] == "truncated" and "before the document is complete" in \
        reasons["truncated.json"]["reason"]
    assert reasons["edited.json"]["kind"] == "hand-edited" and "digest does not match" in reasons["edited.json"]["reason"]
    assert reasons["offschema.json"]["kind"] == "schema" and "checks/0/status" in reasons["offschema.json"]["reason"]
    assert reasons["nodigest.json"]["kind"] == "no-digest"
    subset = reasons["subset-c.json"]
    assert subset["kind"] == "missing-mandatory"
    assert "determinism" in subset["reason"] and "bad_input" in subset["reason"] and "parity" not in \
        subset["reason"].split("(")[0]
    for name in ("truncated.json", "edited.json", "offschema.json", "nodigest.json", "subset-c.json"):
        assert any(name in line for line in lines), (name, lines)
    board = json.loads((out / "scoreboard.json").read_text())
    assert len(board["reports"]) == len(good)
    assert {r["row"] for r in board["rows"]} == {"lab-a / cpu:0", "lab-a / labnpu:0", "lab-b / labnpu:0",
                                                  "lab-b / faultsegv:0", "lab-b / faulthang:0"}
    # Without any rejection (and no baseline) the merge exits 0.
    assert merge_cli(*good, "--out", tmp_path / "clean").returncode == 0


# --------------------------------------------------------------------------------------------- the matrix
def test_states_are_kept_distinct_in_the_matrix(lab, tmp_path):
    board = S.merge(lab.values(), tmp_path / "board", allow_incomplete=True)
    states = {(r["row"], col): cell["state"] for r in board["rows"] for col, cell in r["cells"].items()}
    assert states == {
        ("lab-a / cpu:0", "mlp/fp32"): "pass",
        ("lab-a / cpu:0", "mlp/fp16"): "skipped",          # the CPU plugin declines fp16
        ("lab-a / labnpu:0", "mlp/fp32"): "pass",          # 1.1 is the newest report of lab-a's labnpu
        ("lab-b / labnpu:0", "mlp/fp32"): "expected-failure",
        ("lab-b / faultsegv:0", "mlp/fp32"): "crashed",
        ("lab-b / faulthang:0", "mlp/fp32"): "hung",
        ("lab-c / cpu:0", "mlp/fp32"): "incomplete",
    }, states
    assert set(states.values()) == set(S.STATES) - {"fail"}  # fail: the superseded 1.0 report, below
    incomplete = row(board, "lab-c / cpu:0")
    assert "determinism" in incomplete["cells"][CELL]["missing_mandatory"]
    assert incomplete["verdict"] != "conformant"
    # The superseded lab-a labnpu 1.0 report fails parity, with the drift as evidence.
    old = S.merge([lab["npu10-a"]], tmp_path / "old")
    cell = row(old, "lab-a / labnpu:0")["cells"][CELL]
    assert cell["state"] == "fail"
    parity = next(c for c in cell["checks"] if c["check"] == "parity")
    assert parity["state"] == "fail" and "rel" in parity["message"].lower()
    # Crash and hang evidence travel into the cell.
    segv = next(c for c in row(board, "lab-b / faultsegv:0")["cells"][CELL]["checks"] if c["state"] == "crashed")
    assert "SIGSEGV" in " ".join(segv["evidence"]) + segv["message"] + segv["stderr_tail"]
    hung = next(c for c in row(board, "lab-b / faulthang:0")["cells"][CELL]["checks"] if c["state"] == "hung")
    assert "faulthang" in hung["stderr_tail"] + " ".join(hung["evidence"])


def test_mandatory_pass_rate_per_device_and_trend_over_plugin_versions(lab, tmp_path):
    board = S.merge(lab.values(), tmp_path / "board", allow_incomplete=True)
    n = len(S.mandatory_checks())
    cpu = row(board, "lab-a / cpu:0")["mandatory"]
    # fp16 was asked for and the CPU declines it: its mandatory checks count, not passed; no "conformant".
    assert (cpu["passed"], cpu["total"], cpu["pass_rate"]) == (n, 2 * n, 0.5)
    assert row(board, "lab-a / cpu:0")["verdict"] == "incomplete"
    assert row(board, "lab-a / labnpu:0")["verdict"] == "conformant"
    assert row(board, "lab-b / labnpu:0")["verdict"] == "not_conformant"  # an expected failure is not conformance
    # The scoreboard spells verdicts as the reports do, and says whether a report's own verdict agrees.
    assert all(r["verdict"] in ("conformant", "not_conformant", "incomplete") for r in board["rows"])
    assert all(r["verdict_agrees"] == (r["verdict"] == r["report_verdict"]) for r in board["rows"])
    assert row(board, "lab-a / labnpu:0")["plugin_version"] == "1.1"
    xfail = row(board, "lab-b / labnpu:0")["mandatory"]
    assert (xfail["passed"], xfail["total"]) == (n - 1, n)  # an expected failure is not a pass
    subset = row(board, "lab-c / cpu:0")["mandatory"]  # --checks parity: load and parity pass, the rest never ran
    assert subset["total"] == n and 2 <= subset["passed"] < n
    assert row(board, "lab-b / faultsegv:0")["mandatory"]["pass_rate"] < 1
    trend = next(t for t in board["trend"] if t["device_kind"] == "labnpu")
    points = {p["plugin_version"]: p for p in trend["points"]}
    assert [p["plugin_version"] for p in trend["points"]] == ["1.0", "1.1"]
    assert (points["1.0"]["passed"], points["1.0"]["total"]) == (2 * (n - 1), 2 * n)  # lab-a fail + lab-b xfail
    assert points["1.1"]["pass_rate"] == 1.0
    assert sorted(points["1.0"]["rows"]) == ["lab-a / labnpu:0", "lab-b / labnpu:0"]
    machines = {e["machine"] for e in board["environments"]}
    assert machines == {"lab-a", "lab-b", "lab-c"}


def test_baseline_diff_reports_new_failures_and_new_passes(lab, tmp_path):
    fixed = tmp_path / "fixed"
    S.merge([lab["cpu-a"], lab["npu11-a"]], fixed)
    proc = merge_cli(lab["cpu-a"], lab["npu10-a"], "--out", tmp_path / "regressed", "--baseline",
                     fixed / "scoreboard.json")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a new failure fails the merge
    assert "NEW FAILURE lab-a / labnpu:0 mlp/fp32/parity: pass -> fail" in proc.stdout
    diff = json.loads((tmp_path / "regressed" / "scoreboard.json").read_text())["baseline"]
    assert [(i["row"], i["id"], i["was"], i["now"]) for i in diff["new_failures"]] == \
        [("lab-a / labnpu:0", "mlp/fp32/parity", "pass", "fail")]
    assert diff["new_passes"] == []
    # The other way round: the fix shows as a new pass, and nothing fails.
    broken = tmp_path / "broken"
    S.merge([lab["cpu-a"], lab["npu10-a"]], broken)
    proc = merge_cli(lab["cpu-a"], lab["npu11-a"], "--out", tmp_path / "repaired", "--baseline",
                     broken / "scoreboard.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    board = json.loads((tmp_path / "repaired" / "scoreboard.json").read_text())
    assert [(i["id"], i["was"], i["now"]) for i in board["baseline"]["new_passes"]] == \
        [("mlp/fp32/parity", "fail", "pass")]
    assert row(board, "lab-a / labnpu:0")["cells"][CELL]["baseline"]["new_passes"] == ["mlp/fp32/parity"]
    # A failure the baseline already knows (expected failure there) is not new.
    known = tmp_path / "known"
    S.merge([lab["npu10-b"]], known)
    again = S.merge([lab["npu10-b"]], tmp_path / "again", baseline=known / "scoreboard.json")
    assert again["baseline"]["new_failures"] == [] and S.exit_status(again) == 0


def test_reports_older_than_the_threshold_are_flagged_stale(lab, tmp_path):
    made = created(lab["cpu-a"])
    later = (made + dt.timedelta(days=15)).isoformat()
    proc = merge_cli(lab["cpu-a"], "--out", tmp_path / "old", "--now", later)
    assert proc.returncode == 0 and "STALE (15 days)" in proc.stdout, proc.stdout + proc.stderr
    board = json.loads((tmp_path / "old" / "scoreboard.json").read_text())
    assert board["stale"] == ["lab-a / cpu:0"] and board["rows"][0]["age_days"] == pytest.approx(15, abs=0.01)
    assert "badge stale" in (tmp_path / "old" / "index.html").read_text()
    assert not S.merge([lab["cpu-a"]], tmp_path / "tolerant", now=made + dt.timedelta(days=15),
                       stale_days=30)["stale"]
    assert not S.merge([lab["cpu-a"]], tmp_path / "fresh", now=made + dt.timedelta(days=13))["stale"]


# --------------------------------------------------------------------------------------------- the browser
def _chromium():
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    path = os.environ.get("HWDEPLOY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    return playwright, path


def test_index_html_shows_every_cell_as_scoreboard_json_says(lab, tmp_path):
    playwright, chromium = _chromium()
    baseline = tmp_path / "baseline"
    S.merge([lab["cpu-a"], lab["npu10-a"], lab["npu10-b"]], baseline)
    out = tmp_path / "board"
    made = max(created(p) for p in lab.values())
    edited = tmp_path / "edited.json"
    tampered = json.loads(lab["segv-b"].read_text())
    tampered["checks"][-1]["message"] += " (looks fine to me)"
    edited.write_text(json.dumps(tampered, indent=1))
    board = S.merge([*lab.values(), edited], out, baseline=baseline / "scoreboard.json", allow_incomplete=True,
                    now=made + dt.timedelta(days=1), stale_days=14)
    assert [Path(r["path"]).name for r in board["rejected"]] == ["edited.json"]
    page_html = (out / "index.html").read_text()
    assert "http://" not in page_html.replace("http://hwdeploy.invalid", "") and "https://" not in page_html
    expected = {(r["row"], col): cell["state"] for r in board["rows"] for col, cell in r["cells"].items()}

    args = ["--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
            "--disable-dev-shm-usage"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
    problems, requests = [], []
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto((out / "index.html").as_uri())
            page.wait_for_selector("body[data-ready='true']", timeout=30_000)
            cells = page.eval_on_selector_all(
                "td.cell", "els => els.map(e => [e.dataset.row, e.dataset.col, e.dataset.state, e.dataset.baseline])")
            seen = {(r, c): s for r, c, s, _ in cells}
            assert seen == expected
            assert len(set(seen.values())) == len(S.STATES) - 1  # fail is only in the superseded 1.0 report
            # The baseline badges: lab-a's labnpu parity is a new pass, the new faulty devices new failures.
            marks = {(r, c): b for r, c, _, b in cells}
            assert marks[("lab-a / labnpu:0", CELL)] == "new-pass"
            assert marks[("lab-b / faultsegv:0", CELL)] == "new-failure"
            assert marks[("lab-a / cpu:0", CELL)] == ""
            rates = dict(page.eval_on_selector_all(
                "tr[data-row]", "els => els.map(e => [e.dataset.row,"
                                " e.querySelector('td.rate-cell').dataset.passRate])"))
            assert rates == {r["row"]: f"{r['mandatory']['pass_rate']:.6f}" for r in board["rows"]}
            assert page.locator("tr[data-row='lab-a / cpu:0']").get_attribute("data-stale") == "false"
            assert page.locator("#rejected tr[data-kind='hand-edited']").count() == 1
            versions = page.eval_on_selector_all("[data-device-kind='labnpu'] circle",
                                                 "els => els.map(e => [e.dataset.version, e.dataset.passRate])")
            trend = next(t for t in board["trend"] if t["device_kind"] == "labnpu")
            assert versions == [[p["plugin_version"], f"{p['pass_rate']:.6f}"] for p in trend["points"]]
            # Click-through: the hung cell opens its evidence, with the stack of the waiting thread.
            link = page.locator("td.cell[data-row='lab-b / faulthang:0'][data-col='mlp/fp32'] a")
            target = link.get_attribute("data-evidence")
            assert page.locator(f"#{target}").evaluate("e => e.open") is False
            link.click()
            details = page.locator(f"#{target}")
            assert details.evaluate("e => e.open") is True and details.get_attribute("data-state") == "hung"
            assert details.locator("tr[data-state='hung']").count() >= 1
            assert "faulthang" in details.inner_text()
            assert page.evaluate("location.hash") == f"#{target}"
            page.evaluate("window.scrollTo(0, 0)")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert [u for u in requests if not u.startswith("file://")] == []
    assert SCREENSHOT.stat().st_size > 10_000
