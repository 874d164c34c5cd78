"""Render pytest-benchmark JSON from ``benchmarks/`` as the Markdown tables of the README.

    pytest benchmarks --benchmark-json=.benchmarks/latest.json
    python benchmarks/render.py [.benchmarks/latest.json] [--output benchmarks/RESULTS.md]

Reads only the JSON (no hwdeploy import): machine, versions and load come
from what the run recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

BACKENDS = ["paddle-inference", "onnxruntime", "openvino"]


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _order(model: str, models: list[str]) -> tuple[int, str]:
    return (models.index(model) if model in models else len(models), model)


def render(data: dict) -> str:
    benches = data.get("benchmarks", [])
    info = data.get("machine_info", {})
    hw = info.get("hwdeploy", {})
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for b in benches:
        by_kind[b.get("extra_info", {}).get("kind", "other")].append(b)
    zoo_order = []
    for b in benches:
        model = b.get("extra_info", {}).get("model")
        if model and model not in zoo_order:
            zoo_order.append(model)

    out = ["### Benchmarks", ""]
    versions = ", ".join(f"{k} {v}" for k, v in hw.get("versions", {}).items())
    load = ""
    if hw.get("loadavg_start") and hw.get("loadavg_end"):
        load = (f"; 1-min load average {hw['loadavg_start'][0]:.1f} at start, {hw['loadavg_end'][0]:.1f} at end"
                f" on {hw.get('cores', '?')} cores")
    out += [f"Machine: {hw.get('cpu') or info.get('cpu', {}).get('brand_raw', '?')}, {hw.get('cores', '?')} usable"
            f" cores, {hw.get('threads_per_predictor', '?')} math threads per predictor, Python"
            f" {hw.get('python', info.get('python_version', '?'))}{load}. Run {data.get('datetime', '?')[:19]}.",
            "", f"Versions: {versions}.", "",
            "Latencies are medians of per-call wall time (ms) through `Predictor.run` (inputs checked, outputs"
            " copied out).", ""]

    rows = []
    pairs: dict[tuple, dict] = defaultdict(dict)
    for b in by_kind["overhead"]:
        e = b["extra_info"]
        pairs[(e["model"], e["batch"])][e["impl"]] = b
    for (model, batch), pair in sorted(pairs.items(), key=lambda kv: (_order(kv[0][0], zoo_order), kv[0][1])):
        raw, hwd = pair.get("paddle.inference"), pair.get("hwdeploy")
        raw_s = raw["stats"]["median"] if raw else None
        hw_s = hwd["stats"]["median"] if hwd else None
        e = hwd["extra_info"] if hwd else {}
        rows.append([model, batch, _ms(raw_s), _ms(hw_s), f"{hw_s / raw_s:.3f}" if raw_s and hw_s else "—",
                     f"{e['interleaved_ratio']:.3f}" if "interleaved_ratio" in e else "—",
                     f"{e['interleaved_min_ratio']:.3f}" if "interleaved_min_ratio" in e else "—",
                     f"{e['interleaved_overhead_us']:+.1f}" if "interleaved_overhead_us" in e else "—",
                     f"{e['validation_us']:.1f}" if "validation_us" in e else "—",
                     f"{e['validation_ratio']:.3f}" if "validation_ratio" in e else "—",
                     f"{e['guard_ratio']:.3f}" if "guard_ratio" in e else "—"])
    if rows:
        out += ["#### Wrapper overhead: hwdeploy vs raw `paddle.inference` (same config)", "",
                "*ratio*: the two pytest-benchmark medians (measured one after the other); *interleaved*: both"
                " called alternately in one loop (robust to load drift) — the figure to trust on a busy machine;"
                " *by min*: the same pair's fastest calls. *input checks*: the only work `Predictor.run` adds to the"
                " raw calls (`prepare_inputs`: dtype/shape/NaN checks), timed right after a Paddle call;"
                " *1 + checks/raw* is the overhead it implies, free of the run-to-run noise of long calls."
                " *guard ratio*: `run()` with its shared-predictor guard over the same call without it, interleaved.",
                ""]
        out += _table(["model", "batch", "raw ms", "hwdeploy ms", "ratio", "interleaved ratio",
                       "interleaved ratio by min", "overhead µs (interleaved medians)", "input checks µs",
                       "1 + checks/raw", "guard ratio"], rows)

    cells: dict[tuple, dict[str, str]] = defaultdict(dict)
    for b in by_kind["backend"]:
        e = b["extra_info"]
        cells[(e["model"], e["batch"])][e["backend"]] = _ms(b["stats"]["median"]) + (
            "" if e.get("rel_l2", 0) <= 1e-4 else f" (rel err {e['rel_l2']:.1e})")
    rows = []
    for (model, batch), row in sorted(cells.items(), key=lambda kv: (_order(kv[0][0], zoo_order), kv[0][1])):
        rows.append([model, batch] + [row.get(b, "—") for b in BACKENDS])
    if rows:
        out += ["#### CPU backends through hwdeploy (median ms per call)", "",
                "— : the backend is not installed or cannot convert the model (see the run log)."
                " All shown numbers passed parity with the Paddle Inference reference (relative L2 <= 1e-4).",
                ""]
        out += _table(["model", "batch"] + BACKENDS, rows)

    rows = []
    for b in sorted(by_kind["fastest"], key=lambda b: _order(b["extra_info"]["model"], zoo_order)):
        e = b["extra_info"]
        sides = ", ".join(f"{k} {v:.2f}" for k, v in sorted(e["side_by_side_ms"].items(), key=lambda kv: kv[1]))
        by_min = (f"{e['ratio_to_best_single_by_min']:.3f} ({e['best_single_by_min']})"
                  if "ratio_to_best_single_by_min" in e else "—")
        rows.append([e["model"], e["chosen"], e["best_single"], f"{e['ratio_to_best_single']:.3f}", by_min, sides])
    if rows:
        out += ["#### `device=\"auto:fastest\"` vs the fastest single backend (batch 1, side by side in one run)", "",
                "*ratio*: median latency of the auto:fastest predictor over the best single backend's, all timed in"
                " one interleaved loop; *by min*: the same with each one's fastest call (less sensitive to load).", ""]
        out += _table(["model", "chosen", "fastest single", "ratio", "ratio by min", "side-by-side medians (ms)"], rows)

    created: dict[tuple, dict[str, float]] = defaultdict(dict)
    for b in by_kind["create"]:
        e = b["extra_info"]
        created[(e["model"], e["backend"])][e["state"]] = b["stats"]["median"]
    rows = [[m, be] + [f"{v[state]:.2f}" if state in v else "—" for state in ("cold", "warm")]
            for (m, be), v in sorted(created.items(), key=lambda kv: (_order(kv[0][0], zoo_order), kv[0][1]))]
    if rows:
        out += ["#### Predictor creation (s): cold (empty hwdeploy cache) vs warm (caches filled)", ""]
        out += _table(["model", "backend", "cold s", "warm s"], rows)

    rows = [[b["extra_info"]["model"], b["extra_info"]["mode"], f"{b['stats']['median']:.2f}",
             ", ".join(b["extra_info"]["cache_files"]) or "(nothing written)"] for b in by_kind["optim-cache"]]
    if rows:
        out += ["#### Paddle's optimized-model cache on a second creation (PIR, CPU, oneDNN)", ""]
        out += _table(["model", "mode", "creation s", "files in the cache directory"], rows)

    for b in by_kind["startup"]:
        e = b["extra_info"]
        out += ["#### Start-up", ""]
        out += _table(["`import hwdeploy` ms", "`hwdeploy.devices()` ms (probe cache warm)", "devices reported",
                       "heavy runtimes imported"],
                      [[f"{e['import_ms']:.0f}", f"{e['devices_ms']:.0f}", e["devices"],
                        ", ".join(e["heavy_modules"]) or "none"]])

    rows = [[b["extra_info"]["backend"], b["extra_info"]["workers"], f"{b['extra_info']['inferences_per_s']:.0f}"]
            for b in sorted(by_kind["throughput"],
                            key=lambda b: (b["extra_info"]["backend"], b["extra_info"]["workers"]))]
    if rows:
        model = by_kind["throughput"][0]["extra_info"]["model"]
        out += [f"#### Throughput: {model}, batch 1, N threads x cloned predictors (1 math thread each)", ""]
        out += _table(["backend", "threads x clones", "inferences/s"], rows)

    for b in by_kind["resize-reference"]:
        e = b["extra_info"]
        ratio = e.get("ratio_to_openvino")
        versus = f"reference over OpenVINO **{ratio:.2f}x** (goal: 1.5x)" if ratio else "OpenVINO not measured"
        if e.get("probe_ratio_to_openvino"):
            versus += f", with oneDNN's full placement (the probe) {e['probe_ratio_to_openvino']:.2f}x"
        out += [f"#### Resize models: the Paddle Inference reference on {e['model']} (batch 1)", "",
                f"{versus}; {e['speedup_vs_onednn_off']:.2f}x faster than the reference with oneDNN off (before).",
                ""]
        out += _table(["runtime", "median ms (side by side)", "rel. L2 vs oneDNN off"],
                      [[k, f"{v:.2f}", f"{e['rel_l2_vs_onednn_off'].get(k, 0.0):.1e}"]
                       for k, v in e["side_by_side_ms"].items()])
    out += _precision_section(sorted(by_kind["precision"], key=lambda b: (_order(b["extra_info"]["model"], zoo_order),
                                                                          b["extra_info"]["batch"])))
    out += _fastest_precision_section(by_kind["fastest-precision"])
    out += _serve_section(by_kind["serve"])

    rows = [[b.get("group") or "", b["name"], _ms(b["stats"]["median"]), b["stats"]["rounds"]]
            for b in by_kind["other"]]
    if rows:
        out += ["#### Other benchmarks", ""]
        out += _table(["group", "benchmark", "median ms", "rounds"], rows)
    return "\n".join(out).rstrip() + "\n"


def _precision_section(benches: list[dict]) -> list[str]:
    """fp32 / bf16 / int8 per model, batch and backend, from ``kind="precision"`` points (one interleaved run each)."""
    rows = []
    for b in benches:
        e = b["extra_info"]
        label = f"{e['model']} ({'trained' if e['trained'] else 'random weights'})"
        reference = e["reference_accuracy"].get("accuracy")
        for key, v in e["variants"].items():
            accuracy = ("—" if reference is None or "accuracy" not in v
                        else f"{reference:.2%} → {v['accuracy']:.2%}")
            agreement = f"{v['top1_agreement']:.1%}" + ("" if e["trained"] or key.endswith("fp32") else " (not judgeable)")
            rows.append([label, e["batch"], key, f"{v['ms']:.3f}" if v["ms"] < 1 else f"{v['ms']:.2f}",
                         f"{v['speedup_vs_fastest_fp32']:.2f}x" + (" (fastest fp32)" if key == e["fastest_fp32"] else ""),
                         accuracy, agreement, f"{v['rel_l2']:.3g}"])
    if not rows:
        return []
    out = ["#### Lower precision: every (backend, precision) of a model timed side by side in one interleaved run", ""]
    out += _table(["model", "batch", "backend precision", "median ms", "speed-up vs fastest fp32",
                   "accuracy Paddle fp32 → this (test split)", "top-1 agreement", "rel. L2 vs Paddle fp32"], rows)
    missing = sorted({f"{key}: {why}" for b in benches for key, why in b["extra_info"].get("unavailable", {}).items()})
    return out + ([f"Unavailable: {'; '.join(missing)}.", ""] if missing else [])


def _fastest_precision_section(benches: list[dict]) -> list[str]:
    """What auto:fastest chose within accuracy="int8", from ``kind="fastest-precision"`` points."""
    rows = []
    for b in benches:
        e = b["extra_info"]
        measured = sorted((r for r in e["candidates"] if r.get("median_ms") is not None), key=lambda r: r["median_ms"])
        refused = [f"{r['backend']} {r['precision']}" for r in e["candidates"]
                   if r.get("parity") is False and "accuracy budget" in (r.get("error") or "")]
        rows.append([e["model"], e["batch"], f"{e['chosen']['backend']} {e['chosen']['precision']}",
                     ", ".join(f"{r['backend']} {r['precision']} {r['median_ms']:.3f}" for r in measured),
                     ", ".join(refused) or "none"])
    if not rows:
        return []
    out = ['#### `auto:fastest` with `accuracy="int8"` on the trained models', ""]
    return out + _table(["model", "batch", "chosen", "candidates within the budget (median ms)",
                         "refused by the accuracy budget"], rows)


def _serve_section(benches: list[dict]) -> list[str]:
    """The serving table, and the ratios issue 17 sets goals for, from ``kind="serve"`` points."""
    points: dict[tuple[str, str], dict[str, dict]] = {}
    for b in benches:
        e = b["extra_info"]
        points[(e["model"], e["setup"])] = e["points"]
    if not points:
        return []
    rows = [[model, setup, c, f"{p['requests_per_s']:.0f}", f"{p['p50_ms']:.1f}", f"{p['p99_ms']:.1f}"]
            for (model, setup), by_c in points.items() for c, p in sorted(by_c.items(), key=lambda kv: int(kv[0]))]
    out = ["#### Serving on Ray Serve (tritonclient on the same cores, one math thread per predictor)", ""]
    out += _table(["model", "setup", "concurrency", "req/s", "p50 ms", "p99 ms"], rows)

    def qps(model, setup, c):
        return points.get((model, setup), {}).get(str(c), {}).get("requests_per_s")

    ratios = []
    for model in dict.fromkeys(m for m, _s in points):
        two, one = qps(model, "2 replicas, batching off", 32), qps(model, "1 replica, batching off", 32)
        batched = qps(model, "1 replica, batching 32/10ms", 32)
        inproc = points.get((model, "in-process predictor"), {}).get("1", {}).get("p50_ms")
        taxes = []
        for setup in ("1 replica, batching off", "1 replica, batching off, no request logs"):
            served = points.get((model, setup), {}).get("1", {}).get("p50_ms")
            taxes.append(f"{served - inproc:+.1f}" if served is not None and inproc is not None else "—")
        ratios.append([model, f"{two / one:.2f}x" if two and one else "—",
                       f"{batched / one:.2f}x" if batched and one else "—", *taxes])
    out += ["Goals (issue 17): two replicas >= 1.8x one replica's throughput; batching >= 2x at concurrency 32 on the"
            " transformer encoder; serving tax at concurrency 1 <= 2 ms p50.", ""]
    out += _table(["model", "2 replicas / 1 (c=32, batching off)", "batching on / off (c=32, 1 replica)",
                   "serving tax p50 ms (c=1)", "the same, request logs off"], ratios)
    return out


def _default_input() -> Path:
    root = Path(__file__).resolve().parent.parent / ".benchmarks"
    latest = root / "latest.json"
    if latest.exists():
        return latest
    found = sorted(root.rglob("*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no benchmark JSON under {root}: run `pytest benchmarks --benchmark-json={latest}` first")
    return found[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="*", type=Path,
                        help="pytest-benchmark JSON file(s); default .benchmarks/latest.json")
    parser.add_argument("--output", type=Path, help="write the Markdown here instead of stdout")
    args = parser.parse_args(argv)
    paths = args.json or [_default_input()]
    data = json.loads(paths[0].read_text())
    for extra in paths[1:]:  # several partial runs rendered as one
        data["benchmarks"] = data.get("benchmarks", []) + json.loads(extra.read_text()).get("benchmarks", [])
    text = render(data)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
