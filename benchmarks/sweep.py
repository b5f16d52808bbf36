"""(e) Cost of a sweep as its grid grows, with stage-1 sharing: runs benchmarks/sweep_cost.py (its owner's).

Contract: `benchmarks.sweep_cost.run(quick: bool) -> dict` (a result with "name" and, ideally, "ratio").
Until that module exists this entry reports itself skipped rather than duplicating it.
"""
from __future__ import annotations

import importlib
import inspect


def run(quick: bool = False) -> dict:
    try:
        mod = importlib.import_module("benchmarks.sweep_cost")
    except ModuleNotFoundError as e:
        if e.name != "benchmarks.sweep_cost":
            raise
        return {"name": "sweep_cost", "skipped": "benchmarks/sweep_cost.py is not there yet"}
    fn = getattr(mod, "run", None) or getattr(mod, "main")
    res = fn(quick=quick) if "quick" in inspect.signature(fn).parameters else fn()
    if not isinstance(res, dict):
        res = {"result": res}
    res.setdefault("name", "sweep_cost")
    return res
