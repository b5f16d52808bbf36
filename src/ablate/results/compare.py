"""Arm comparison: per-arm means with 95% CIs and Holm-corrected tests against a baseline arm.

Glue between the table (one value per cell x metric) and `stats` (numbers only). It reads each cell's
per-question file once, decides per metric whether the per-question scores explain the metric (their mean
equals it, as for accuracies) -- only then are questions resampled -- and falls back to seed-level
statistics for metrics that are not a mean over questions (POPE F1, MME sums).
"""
from __future__ import annotations

import json
import math
import zlib
from functools import lru_cache

import numpy as np
import pandas as pd

from . import stats

SUMMARY_COLUMNS = ["arm", "metric", "benchmark", "n_seeds", "mean", "ci_low", "ci_high", "ci_basis",
                   "is_baseline", "diff", "p", "p_holm", "significant", "test"]


@lru_cache(maxsize=4096)
def load_scores(path: str) -> tuple[tuple[str, float], ...]:
    """(question_id, score) pairs of a per-question JSON-lines file; lines without a score are skipped."""
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                if rec.get("score") is not None:
                    out.append((str(rec.get("question_id")), float(rec["score"])))
    return tuple(out)


def _scale(value: float, scores: np.ndarray) -> float | None:
    """1 or 100 if the metric is the mean of the scores (as a fraction or a percentage), else None."""
    if not scores.size or value is None or math.isnan(value):
        return None
    m = float(scores.mean())
    for k in (1.0, 100.0):
        if abs(value / k - m) <= 5e-4:            # rows may round metrics to 4 decimals
            return k
    return None


def _arm_seeds(sub: pd.DataFrame, notes: list) -> dict:
    """{seed: (value, {qid: score} | None, scale | None)} for one arm and metric."""
    out = {}
    for r in sub.itertuples(index=False):
        scores, scale = None, None
        if isinstance(r.per_question, str):
            try:
                pairs = load_scores(r.per_question)
            except (OSError, ValueError) as e:
                notes.append(f"cell {r.cell_id}: cannot read {r.per_question} ({type(e).__name__})")
                pairs = ()
            scores = dict(pairs)
            scale = _scale(r.value, np.fromiter(scores.values(), float, len(scores)))
        out[int(r.seed) if pd.notna(r.seed) else -1] = (r.value, scores, scale)
    return out


def _ci(seeds: dict, alpha: float, n_boot: int, rng) -> tuple[float, float, str]:
    scales = {s[2] for s in seeds.values()}
    if None not in scales and len(scales) == 1:
        k = scales.pop()
        per_seed = [np.fromiter(s[1].values(), float) * k for s in seeds.values()]
        lo, hi = stats.bootstrap_ci(per_seed, n_boot, alpha, rng)
        return lo, hi, "questions" if len(per_seed) == 1 else "seeds+questions"
    if len(seeds) >= 2:
        lo, hi = stats.t_interval([s[0] for s in seeds.values()], alpha)
        return lo, hi, "seeds (t)"
    return math.nan, math.nan, "none"


def _test(arm: dict, base: dict, test: str, rng) -> tuple[float, float, str]:
    """(mean difference over matched seeds, p, which test) of arm minus baseline."""
    matched = sorted(set(arm) & set(base))
    if not matched:
        return math.nan, math.nan, "no matched seeds"
    diffs = np.array([arm[s][0] - base[s][0] for s in matched])
    if test in ("auto", "seed") and len(matched) >= 2:
        return float(diffs.mean()), float(stats.seed_t_pvalue(diffs)), f"paired t over {len(matched)} seeds"
    if test == "seed":
        return float(diffs.mean()), math.nan, "1 matched seed: seed test impossible"
    pooled = []
    for s in matched:
        (_, qa, ka), (_, qb, kb) = arm[s], base[s]
        if ka is None or kb is None or ka != kb:
            return float(diffs.mean()), math.nan, "metric is not a per-question mean: no question-level test"
        common = sorted(set(qa) & set(qb))
        pooled.append(np.array([qa[q] - qb[q] for q in common]) * ka)
    p = stats.signflip_pvalue(np.concatenate(pooled), rng=rng)
    label = "sign-flip over questions" + (" (1 seed: seed noise not covered)" if len(matched) == 1 else "")
    return float(diffs.mean()), p, label


def summarize(sub: pd.DataFrame, axis: str, arms: list, baseline, metrics: list[str], alpha: float = 0.05,
              n_boot: int = 2000, test: str = "auto", rng_seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Summary rows (SUMMARY_COLUMNS) for each arm x metric of `sub`, and notes on what was not possible.

    `sub` holds the cells of one figure (the other axes already fixed); `arms` are values of `axis`, in
    display order; Holm's correction runs over every test in this call (one figure = one family).
    """
    notes, rows = [], []
    key = sub[axis].astype(str)
    for metric in metrics:
        msub = sub[sub["metric"] == metric]
        per_arm = {arm: _arm_seeds(msub[key.loc[msub.index] == str(arm)], notes) for arm in arms}
        base = per_arm.get(baseline) or {}
        for arm in arms:
            seeds = per_arm[arm]
            if not seeds:
                continue
            # one generator per arm x metric, seeded by the cells: the same arm gets the same CI in every figure
            ids = ",".join(sorted(msub.loc[key.loc[msub.index] == str(arm), "cell_id"]))
            rng = np.random.default_rng([rng_seed, zlib.crc32(f"{metric}|{ids}".encode())])
            lo, hi, basis = _ci(seeds, alpha, n_boot, rng)
            values = [v[0] for v in seeds.values()]
            if len(values) >= 2 and len(set(values)) == 1:
                # a seed that changes nothing makes every seed-level test certain: worth a look, not a star
                notes.append(f"{axis}={arm}: all {len(values)} seeds give {metric} = {values[0]:g} exactly; "
                             "is the seed reaching the run?")
            is_base = str(arm) == str(baseline)
            if is_base:
                diff, p, how = 0.0, math.nan, "baseline"
            elif not base:
                diff, p, how = math.nan, math.nan, "baseline lacks this metric"
            else:
                diff, p, how = _test(seeds, base, test, rng)
            rows.append({"arm": arm, "metric": metric, "benchmark": metric.split("/")[1] if "/" in metric else None,
                         "n_seeds": len(seeds), "mean": float(np.mean([s[0] for s in seeds.values()])),
                         "ci_low": lo, "ci_high": hi, "ci_basis": basis, "is_baseline": is_base, "diff": diff,
                         "p": p, "test": how})
    df = pd.DataFrame(rows, columns=[c for c in SUMMARY_COLUMNS if c not in ("p_holm", "significant")])
    df["p_holm"] = stats.holm(df["p"].to_numpy()) if len(df) else []
    df["significant"] = df["p_holm"] < alpha
    return df[SUMMARY_COLUMNS], notes
