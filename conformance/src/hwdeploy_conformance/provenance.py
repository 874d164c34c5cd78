"""Where a report comes from and whether it is intact: the machine's environment fingerprint and the content
digest, both written at report time and checked by ``hwdeploy conformance merge``.

Cheap to import (no Paddle, no jsonschema).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
from pathlib import Path
from typing import Any

#: Set by a lab to name its machines in merged scoreboards (CI runners often share one hostname).
ENV_LAB_MACHINE = "HWDEPLOY_LAB_MACHINE"
DIGEST_KEY = "digest"
DIGEST_ALGORITHM = "sha256"
#: How the digested bytes are made; a reader recomputes them the same way.
CANONICAL_FORM = "json: sorted keys, separators (',', ':'), UTF-8, no NaN, without the 'digest' key"


def lab_machine() -> str:
    """The machine's name in lab reports: ``$HWDEPLOY_LAB_MACHINE``, else the hostname."""
    return os.environ.get(ENV_LAB_MACHINE, "").strip() or socket.gethostname()


def _os_release() -> str | None:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith("PRETTY_NAME="):
                    return line.partition("=")[2].strip().strip('"')
        except OSError:
            continue
    return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def environment(device: dict[str, Any] | None, plugin: dict[str, Any] | None,
                versions: dict[str, Any]) -> dict[str, Any]:
    """The environment fingerprint of one run: host, OS, CPU, driver/runtime/plugin/hwdeploy versions, and the
    sha256 of those fields (``id``), so that two reports from identical environments show the same id."""
    device, plugin = device or {}, plugin or {}
    device_versions = dict(device.get("versions") or {})
    details = device.get("details") or {}
    driver = {k: v for k, v in device_versions.items() if "driver" in k.lower() or "firmware" in k.lower()}
    for key in ("driver", "driver_version", "firmware"):
        if key in details and key not in driver:
            driver[key] = details[key]
    runtime = {k.partition(":")[2]: v for k, v in versions.items() if k.startswith("runtime:")}
    runtime.update({k: v for k, v in device_versions.items() if k not in driver and k not in runtime})
    env = {
        "host": lab_machine(),
        "hostname": socket.gethostname(),
        "os": _os_release() or platform.system(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "driver": driver,
        "runtime": runtime,
        "plugin": {"name": plugin.get("name"), "distribution": plugin.get("distribution"),
                   "version": plugin.get("version")},
        "hwdeploy": versions.get("hwdeploy"),
        "hwdeploy_conformance": versions.get("hwdeploy-conformance"),
        "paddlepaddle": versions.get("paddlepaddle"),
    }
    env["id"] = hashlib.sha256(canonical(env)).hexdigest()[:16]
    return env


def canonical(data: Any) -> bytes:
    """The canonical bytes of a JSON value (key order and whitespace do not matter)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def digest(report: dict[str, Any]) -> str:
    """sha256 (hex) of the report's canonical JSON without its ``digest`` key."""
    body = {k: v for k, v in report.items() if k != DIGEST_KEY}
    return hashlib.sha256(canonical(body)).hexdigest()


def with_digest(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` (strict-JSON data) with its ``digest`` set: {"algorithm", "canonical", "value"}."""
    body = {k: v for k, v in report.items() if k != DIGEST_KEY}
    body[DIGEST_KEY] = {"algorithm": DIGEST_ALGORITHM, "canonical": CANONICAL_FORM, "value": digest(body)}
    return body


def verify_digest(report: dict[str, Any]) -> str | None:
    """None when the stored digest matches the content, else the reason it does not."""
    stored = report.get(DIGEST_KEY)
    if not isinstance(stored, dict) or not stored.get("value"):
        return "no content digest (not written by hwdeploy-conformance, or the digest was removed)"
    if stored.get("algorithm") != DIGEST_ALGORITHM:
        return f"unknown digest algorithm {stored.get('algorithm')!r}"
    actual = digest(report)
    if actual != stored["value"]:
        return (f"the content digest does not match (stored sha256 {stored['value'][:12]}…,"
                f" content {actual[:12]}…): the file changed after hwdeploy-conformance wrote it")
    return None
