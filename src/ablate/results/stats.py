"""Statistics for ablation arms: bootstrap CIs, paired tests, Holm correction, and the identical-arms check.

Numpy only (scipy is not a dependency). Two sources of noise matter in a sweep: which questions the
benchmark happens to hold (question noise) and which model a training seed happens to give (seed noise).
- CIs: bootstrap over questions; with several seeds a hierarchical bootstrap (seeds, then questions within
  each drawn seed), so both noises widen the interval.
- Tests of an arm against a baseline arm, paired by seed and question id:
  `seed_t_pvalue`: a paired t-test on the per-seed mean differences. Each seed's difference already holds
  its question noise, and the spread across seeds measures the seed noise, so it stays calibrated when seeds
  differ (needs >= 2 matched seeds).
  `signflip_pvalue`: a sign-flip permutation test on the per-question differences pooled across seeds. It
  is calibrated only when the two arms' models differ by question-level noise alone; with seed noise it
  rejects too often (the identical-arms check below measures how often), so it is used for one seed only.
- `holm`: Holm's step-down adjustment across the comparisons of one figure.
"""
from __future__ import annotations

import math

import numpy as np

_MAX_DISTINCT = 64          # scores with at most this many distinct values are bootstrapped by multinomial counts
_CHUNK_ELEMS = 4_000_000    # bound the memory of index resampling and permutation draws


def resample_means(scores: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n bootstrap means of `scores` (resampling questions with replacement).

    Scores usually take few values (0/1, or VQA's 0, 1/3, 2/3, 1): then drawing how many times each value
    is picked (a multinomial) is the same distribution as resampling indices, and costs O(values), not
    O(questions), per draw.
    """
    scores = np.asarray(scores, dtype=float)
    m = scores.size
    values, counts = np.unique(scores, return_counts=True)
    if values.size <= _MAX_DISTINCT:
        draws = rng.multinomial(m, counts / m, size=n)          # (n, values)
        return draws @ values / m
    out = np.empty(n)
    step = max(1, _CHUNK_ELEMS // m)
    for i in range(0, n, step):
        k = min(step, n - i)
        out[i:i + k] = scores[rng.integers(0, m, size=(k, m))].mean(axis=1)
    return out


def bootstrap_means(per_seed: list, n_boot: int = 2000, rng: np.random.Generator | None = None) -> np.ndarray:
    """Bootstrap replicates of the mean over seeds of each seed's mean score.

    One seed: resample its questions. Several: each replicate draws S seeds with replacement and, for every
    draw, an independent resample of that seed's questions (a seed drawn twice gets two resamples).
    """
    rng = rng or np.random.default_rng(0)
    per_seed = [np.asarray(s, dtype=float) for s in per_seed if len(s)]
    if not per_seed:
        raise ValueError("no scores to bootstrap")
    s_count = len(per_seed)
    if s_count == 1:
        return resample_means(per_seed[0], n_boot, rng)
    pick = rng.integers(0, s_count, size=(n_boot, s_count))        # (B, S) which seed fills each slot
    slots = np.empty((n_boot, s_count))
    for s in range(s_count):
        where = pick == s
        slots[where] = resample_means(per_seed[s], int(where.sum()), rng)
    return slots.mean(axis=1)


def bootstrap_ci(per_seed: list, n_boot: int = 2000, alpha: float = 0.05,
                 rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Percentile (1 - alpha) interval of the mean score; see `bootstrap_means`."""
    boot = bootstrap_means(per_seed, n_boot, rng)
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def t_abs_cdf(t, df: int) -> np.ndarray:
    """P(|T| <= t) for Student's t with integer df (Abramowitz & Stegun 26.7.3-4, a finite series)."""
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, got {df}")
    df = int(df)
    t = np.abs(np.asarray(t, dtype=float))
    theta = np.arctan(t / math.sqrt(df))
    c2, sin = np.cos(theta) ** 2, np.sin(theta)
    if df % 2 == 1:
        series, term = np.zeros_like(t), np.ones_like(t)
        for k in range(1, (df - 1) // 2 + 1):           # 1 + (2/3)c^2 + (2*4)/(3*5)c^4 + ...
            series = series + term
            term = term * c2 * (2 * k) / (2 * k + 1)
        out = 2 / math.pi * (theta + sin * np.sqrt(c2) * series) if df > 1 else 2 / math.pi * theta
    else:
        series, term = np.zeros_like(t), np.ones_like(t)
        for k in range(1, df // 2 + 1):                 # 1 + (1/2)c^2 + (1*3)/(2*4)c^4 + ...
            series = series + term
            term = term * c2 * (2 * k - 1) / (2 * k)
        out = sin * series
    return np.clip(out, 0.0, 1.0)


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t, by bisection on `t_abs_cdf`."""
    target = 2 * p - 1                                   # P(|T| <= q) for the upper p-quantile q
    lo, hi = 0.0, 1.0
    while t_abs_cdf(hi, df) < target:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_abs_cdf(mid, df) < target else (lo, mid)
    return (lo + hi) / 2


def t_interval(values, alpha: float = 0.05) -> tuple[float, float]:
    """Mean +- t * sd / sqrt(n) over seed-level values (for metrics that are not a mean over questions)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return math.nan, math.nan
    half = t_quantile(1 - alpha / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return float(v.mean() - half), float(v.mean() + half)


def seed_t_pvalue(diffs) -> np.ndarray:
    """Two-sided paired t-test p of per-seed differences along the last axis (vectorised over the others)."""
    d = np.asarray(diffs, dtype=float)
    n = d.shape[-1]
    if n < 2:
        raise ValueError("the seed-level test needs at least 2 matched seeds")
    mean, sd = d.mean(axis=-1), d.std(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(sd > 0, mean / (sd / math.sqrt(n)), np.where(mean == 0, 0.0, np.inf))
    return 1.0 - t_abs_cdf(t, n - 1)


def signflip_pvalue(d, n_perm: int = 4000, rng: np.random.Generator | None = None) -> float:
    """Two-sided sign-flip permutation p of the mean per-question difference `d` (pooled over seeds).

    Exact (all 2^N sign patterns) for N <= 16 non-zero differences, Monte Carlo with the +1 correction above.
    """
    d = np.asarray(d, dtype=float)
    d = d[d != 0]                                        # zero differences flip to themselves: no information
    if d.size == 0:
        return 1.0
    obs = abs(d.sum()) - 1e-12
    if d.size <= 16:
        signs = 1 - 2 * ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1)
        return float(np.mean(np.abs(signs @ d) >= obs))
    rng = rng or np.random.default_rng(0)
    hits, step = 0, max(1, _CHUNK_ELEMS // d.size)
    for i in range(0, n_perm, step):
        k = min(step, n_perm - i)
        signs = rng.integers(0, 2, size=(k, d.size), dtype=np.int8) * 2 - 1
        hits += int(np.sum(np.abs(signs @ d) >= obs))
    return (hits + 1) / (n_perm + 1)


def signflip_normal_pvalue(d) -> np.ndarray:
    """The sign-flip test's large-N normal approximation, vectorised over leading axes: z = sum d / sqrt(sum d^2)."""
    d = np.asarray(d, dtype=float)
    num, den = d.sum(axis=-1), np.sqrt((d * d).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(den > 0, np.abs(num) / den, 0.0)
    return np.array([math.erfc(x / math.sqrt(2)) for x in np.ravel(z)]).reshape(z.shape)


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values along the last axis; NaN entries are not comparisons and stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    flat = p.reshape(-1, p.shape[-1]) if p.ndim else p.reshape(1, 1)
    out = np.full_like(flat, np.nan)
    for r, row in enumerate(flat):
        ok = np.flatnonzero(~np.isnan(row))
        m = ok.size
        if m == 0:
            continue
        order = ok[np.argsort(row[ok], kind="stable")]
        adj = np.maximum.accumulate(row[order] * (m - np.arange(m)))
        out[r, order] = np.minimum(adj, 1.0)
    return out.reshape(p.shape)


def simulate_identical_arms(rng: np.random.Generator, n_sweeps: int, n_arms: int = 2, n_seeds: int = 3,
                            n_questions: int = 500, seed_sd: float = 0.1, item_sd: float = 0.7,
                            difficulty_sd: float = 1.5, base_logit: float = 0.5) -> np.ndarray:
    """0/1 scores (sweeps, arms, seeds, questions) from arms that differ only by seed noise.

    Each sweep draws one benchmark (question difficulties, shared by all models). Each (arm, seed) model
    gets a model-wide logit shift ~ N(0, seed_sd^2) -- the seed noise that moves a whole run up or down --
    and a per-question shift ~ N(0, item_sd^2) -- runs disagreeing on single questions.
    """
    r, a, s, q = n_sweeps, n_arms, n_seeds, n_questions
    logit = (base_logit + difficulty_sd * rng.standard_normal((r, 1, 1, q))
             + seed_sd * rng.standard_normal((r, a, s, 1)) + item_sd * rng.standard_normal((r, a, s, q)))
    return (rng.random((r, a, s, q)) < 1 / (1 + np.exp(-logit))).astype(np.float32)


def identical_arms_check(n_sweeps: int = 2000, n_arms: int = 2, n_seeds: int = 3, n_questions: int = 500,
                         seed_sd: float = 0.1, test: str = "auto", alpha: float = 0.05, rng_seed: int = 0,
                         **sim) -> dict:
    """False-positive rate of the arm-vs-baseline tests when every arm is the same configuration.

    Simulates `n_sweeps` sweeps of `n_arms` identical arms, tests arms 1.. against arm 0 as the report does
    (`test`: "seed" = paired t over seeds, "question" = pooled per-question sign-flip (normal approximation),
    "auto" = seed if n_seeds >= 2 else question), Holm-adjusts within each sweep, and counts sweeps with any
    significant difference (the family-wise error rate; with 2 arms simply the false-positive rate).
    """
    if test == "auto":
        test = "seed" if n_seeds >= 2 else "question"
    if test not in ("seed", "question"):
        raise ValueError(f"test must be auto, seed or question, got {test!r}")
    rng = np.random.default_rng(rng_seed)
    chunk = max(1, _CHUNK_ELEMS // (n_arms * n_seeds * n_questions))
    false_pos = 0
    for i in range(0, n_sweeps, chunk):
        k = min(chunk, n_sweeps - i)
        sc = simulate_identical_arms(rng, k, n_arms, n_seeds, n_questions, seed_sd=seed_sd, **sim)
        diff = sc[:, 1:] - sc[:, :1]                                  # (k, arms-1, seeds, questions)
        if test == "seed":
            p = seed_t_pvalue(diff.mean(axis=-1))                     # (k, arms-1)
        else:
            p = signflip_normal_pvalue(diff.reshape(k, n_arms - 1, -1))
        false_pos += int(np.sum((holm(p) < alpha).any(axis=-1)))
    rate = false_pos / n_sweeps
    return {"test": test, "false_positive_rate": rate, "alpha": alpha, "n_sweeps": n_sweeps,
            "n_arms": n_arms, "n_seeds": n_seeds, "n_questions": n_questions, "seed_sd": seed_sd,
            # 3 binomial standard errors of a rate that is truly alpha: the slack a test of the rate allows
            "margin": 3 * math.sqrt(alpha * (1 - alpha) / n_sweeps)}
