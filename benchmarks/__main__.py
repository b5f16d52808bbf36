"""`python -m benchmarks`: run the suite, print each ratio, write every number to .bench/latest.json.

Each run is also appended to .bench/history.jsonl, so runs can be compared over time (on the same machine
and load only: ratios travel, absolute numbers do not).
"""
from __future__ import annotations

import os

# Before torch loads: with OpenMP's default spin-waiting, 2 threads on a loaded 2-core machine ran a step
# 6x slower than 1 thread; passive waiting removes that (and costs nothing when the machine is idle).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.common import BENCH_DIR, REPO  # noqa: E402

COMPILE_BUDGET_S = 360   # torch.compile costs ~1-2 min on this CPU: skipped when the suite has run longer


def _suite(quick: bool, with_compile: bool, t_start: float):
    from benchmarks import dataload, generation, overhead, sweep, train_opts

    n = 4 if quick else 8
    yield "framework_overhead", lambda: overhead.run(quick)
    yield "labelled_logits_align", lambda: train_opts.labelled_logits(n, "align")
    yield "labelled_logits_instruct", lambda: train_opts.labelled_logits(n, "instruct")
    yield "attention", lambda: train_opts.attention(n)
    yield "fused_gelu", lambda: train_opts.fused_gelu(n)
    yield "gradient_checkpointing", lambda: train_opts.checkpointing(n)
    yield "length_grouping", lambda: train_opts.length_grouping(n)
    yield "feature_cache", lambda: train_opts.feature_cache(n)
    yield "bf16_cpu", lambda: train_opts.bf16_cpu(max(3, n // 2))
    yield "generation", lambda: generation.run(quick)
    yield "data_loading", lambda: dataload.run(quick)
    yield "sweep_cost", lambda: sweep.run(quick)
    if with_compile and time.perf_counter() - t_start < COMPILE_BUDGET_S:
        yield "compile", lambda: train_opts.compile_(n)
    elif with_compile:
        yield "compile", lambda: {"name": "compile", "skipped": f"suite past {COMPILE_BUDGET_S} s; run "
                                  "`python -m benchmarks --only compile`"}


def _headline(r: dict) -> str:
    if "skipped" in r:
        return f"skipped: {r['skipped']}"
    for key in ("ratio", "speedup", "memory_ratio"):
        if key in r:
            extra = f" (target {r['target']})" if "target" in r else ""
            more = f", memory x{r['memory_ratio']:.2f}" if key != "memory_ratio" and "memory_ratio" in r else ""
            pad = (f", padding {r['padding_lm_baseline']:.1%} -> {r['padding_lm_grouped']:.1%}"
                   if "padding_lm_baseline" in r else "")
            others = "".join(f", {k} {v:.3f}" for k, v in r.items() if k.startswith(f"{key}_"))
            return f"{key} {r[key]:.3f}{others}{extra}{more}{pad}"
    return json.dumps(r)[:100]


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run, ~3 min)")
    ap.add_argument("--only", default="", help="comma-separated names to run (see the printed names)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile comparison")
    ap.add_argument("--out", default=str(BENCH_DIR / "latest.json"))
    args = ap.parse_args(argv)
    logging.disable(logging.INFO)
    warnings.filterwarnings("ignore")
    import lightning  # noqa: F401  (quiet its start-up tips before the first Trainer)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    only = {s for s in args.only.split(",") if s}
    t_start = time.perf_counter()
    results = []
    for name, fn in _suite(args.quick, not args.no_compile, t_start):
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        try:
            r = fn()
        except Exception as e:  # noqa: BLE001 - one broken benchmark must not hide the others' numbers
            r = {"name": name, "error": f"{type(e).__name__}: {e}"}
        rs = r if isinstance(r, list) else [r]
        for x in rs:
            x["bench_s"] = round(time.perf_counter() - t0, 1)
            results.append(x)
            print(f"{x.get('name', name):<34} {x['error'] if 'error' in x else _headline(x)}   [{x['bench_s']} s]",
                  flush=True)
    import torch

    run = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_sha": _git_sha(),
           "quick": args.quick, "wall_s": round(time.perf_counter() - t_start, 1),
           "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "load_avg": os.getloadavg(), "python": platform.python_version(),
                       "torch": torch.__version__, "cuda": torch.cuda.is_available()},
           "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(run, indent=1, default=str))
    with open(out.parent / "history.jsonl", "a") as f:
        f.write(json.dumps(run, default=str) + "\n")
    print(f"suite: {run['wall_s']} s; all numbers in {out}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
