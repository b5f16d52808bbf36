"""Metric units: whether an eval metric in the rows is a percentage, a fraction, or a raw number.

The row contract (docs/architecture.md) puts eval metrics in the papers' units: percentages, and MME's
perception / cognition / per-subtask scores as sums of percentages. Rows written by hand or by older code
may hold fractions (0-1) instead. Magnitude alone cannot tell the two apart -- a tiny cell's 0.5 %
accuracy, or a column of zeros, looks like a fraction -- so the per-question files decide wherever they
can (a metric that is the mean of its per-question scores is so at x1 or at x100), per benchmark; a
benchmark without evidence of its own takes the root's. Only a root with no such evidence at all falls
back to magnitude: fractions if every value of a benchmark lies in [0, 1] and one is non-zero, else the
contract's percentages.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

PERCENT, FRACTION, RAW = "percent", "fraction", "raw"
_SUM_LEAVES = ("perception", "cognition", "total", "score")


def is_sum(metric: str) -> bool:
    """MME-style metrics: sums of per-subtask percentages (perception up to 2000), never rescaled."""
    parts = metric.split("/")
    return len(parts) >= 3 and parts[0] == "eval" and "mme" in parts[1] and parts[-1] in _SUM_LEAVES


def _bench(metric: str) -> str | None:
    parts = metric.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == "eval" else None


def _evidence(table: pd.DataFrame, max_votes: int = 20) -> dict[str, float]:
    """benchmark -> 1.0 or 100.0: the scale at which most (up to max_votes) non-zero metrics equal the
    mean of their cell's per-question scores. Sub-metrics (one question type) rarely match at either
    scale; a majority keeps a chance coincidence from deciding."""
    from .compare import _scale, load_scores

    votes: dict[str, list[float]] = {}
    rows = table[table["per_question"].notna() & table["value"].notna() & (table["value"] != 0)]
    for r in rows.itertuples(index=False):
        bench = _bench(r.metric)
        if bench is None or is_sum(r.metric) or len(votes.get(bench, ())) >= max_votes:
            continue
        try:
            scores = np.fromiter((s for _, s in load_scores(r.per_question)), float)
        except (OSError, ValueError):
            continue
        k = _scale(float(r.value), scores)
        if k is not None:
            votes.setdefault(bench, []).append(k)
    # ties go to percentages, the contract's unit
    return {b: (1.0 if v.count(1.0) > v.count(100.0) else 100.0) for b, v in votes.items()}


def metric_units(table: pd.DataFrame) -> dict[str, str]:
    """{metric: PERCENT | FRACTION | RAW} for every metric of a results table."""
    if table.empty:
        return {}
    evidence = _evidence(table)
    units: dict[str, str] = {}
    by_bench: dict[str, list[str]] = {}
    for m in table["metric"].unique():
        bench = _bench(m)
        if bench is None or is_sum(m):
            units[m] = RAW                     # losses, MME sums
        else:
            by_bench.setdefault(bench, []).append(m)
    # a benchmark with no evidence of its own (CircularEval, F1: not per-question means) follows the rest of
    # the root -- one producer writes one unit -- and only a root with no evidence at all goes by size
    scales = list(evidence.values())
    overall = (1.0 if scales.count(1.0) > scales.count(100.0) else 100.0) if scales else None
    for bench, ms in by_bench.items():
        scale = evidence.get(bench, overall)
        if scale is not None:
            unit = FRACTION if scale == 1.0 else PERCENT
        else:
            vals = table.loc[table["metric"].isin(ms), "value"].dropna()
            unit = FRACTION if len(vals) and (vals.abs() <= 1.0).all() and (vals != 0).any() else PERCENT
        units.update({m: unit for m in ms})
    return units


def fmt(v, unit: str | None = None) -> str:
    """A value for tables: percentages with one decimal, fractions with three, raw numbers by size."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if unit == PERCENT:
        text = f"{v:.1f}"
    elif unit == FRACTION:
        text = f"{v:.3f}"
    else:
        text = f"{v:.3f}" if abs(v) <= 1.0 else f"{v:.1f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text      # no "-0.0"
