"""Tests of ablate.results.stats and compare: CIs against closed forms, tests, Holm, identical-arms check."""
import math

import numpy as np
import pytest

from ablate.results import stats
from ablate.results.compare import summarize
from ablate.results.table import load_table
from rowfactory import binary_scores, write_arms


@pytest.mark.parametrize("df,q", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (10, 2.228), (30, 2.042)])
def test_t_quantile_matches_tables(df, q):
    assert stats.t_quantile(0.975, df) == pytest.approx(q, abs=1e-3)


def test_seed_t_pvalue_closed_form_df2():
    # diffs 1,2,3: t = 2 / (1/sqrt 3); for df=2, P(|T| > t) = 1 - t / sqrt(2 + t^2)
    t = 2 * math.sqrt(3)
    assert stats.seed_t_pvalue([1.0, 2.0, 3.0]) == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-9)
    assert stats.seed_t_pvalue([0.0, 0.0, 0.0]) == 1.0


def test_bootstrap_ci_one_seed_matches_normal_closed_form():
    n, p = 2000, 0.7
    s = binary_scores(n, p)
    lo, hi = stats.bootstrap_ci([s], n_boot=20000, rng=np.random.default_rng(1))
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    assert lo == pytest.approx(p - half, abs=0.002)
    assert hi == pytest.approx(p + half, abs=0.002)


def test_bootstrap_continuous_scores_use_index_resampling():
    s = np.random.default_rng(0).random(1500)               # > 64 distinct values: the other code path
    boot = stats.resample_means(s, 4000, np.random.default_rng(2))
    assert boot.std() == pytest.approx(s.std() / math.sqrt(s.size), rel=0.05)
    assert boot.mean() == pytest.approx(s.mean(), abs=0.002)


def test_hierarchical_bootstrap_variance_closed_form():
    # replicate = mean of S slots; each slot = a seed drawn uniformly, then its questions resampled:
    # Var = (1/S) * [ mean_s (m_s - m)^2 + mean_s var_s / n_s ]
    per_seed = [binary_scores(500, a, seed=i) for i, a in enumerate([0.5, 0.6, 0.8])]
    m = np.array([x.mean() for x in per_seed])
    within = np.mean([x.var() / x.size for x in per_seed])
    expected = (np.mean((m - m.mean()) ** 2) + within) / 3
    boot = stats.bootstrap_means(per_seed, n_boot=40000, rng=np.random.default_rng(3))
    assert boot.var() == pytest.approx(expected, rel=0.04)
    assert boot.mean() == pytest.approx(m.mean(), abs=0.002)


def test_holm_by_hand():
    adj = stats.holm([0.01, 0.04, 0.03, np.nan])
    np.testing.assert_allclose(adj[:3], [0.03, 0.06, 0.06])
    assert np.isnan(adj[3])


def test_signflip_exact_small():
    assert stats.signflip_pvalue([1, 1, 1, 1, 1]) == pytest.approx(2 / 32)
    assert stats.signflip_pvalue([1, 1, 1, -1, 0, 0]) == pytest.approx(10 / 16)   # zeros carry nothing
    assert stats.signflip_pvalue([0, 0]) == 1.0


def test_signflip_monte_carlo_agrees_with_normal_approximation():
    d = np.random.default_rng(4).choice([-1.0, 0.0, 1.0], size=3000, p=[0.2, 0.62, 0.18])
    p_mc = stats.signflip_pvalue(d, n_perm=20000, rng=np.random.default_rng(5))
    assert p_mc == pytest.approx(float(stats.signflip_normal_pvalue(d)), abs=0.01)


# The identical-arms check: arms that differ only by seed noise. A rate is "at most alpha" when it is
# below alpha + 3 binomial standard errors (the `margin` the check returns: 0.0146 at 2000 sweeps).
@pytest.mark.parametrize("kw", [dict(n_seeds=3), dict(n_seeds=2), dict(n_seeds=5, seed_sd=0.3),
                                dict(n_seeds=3, n_arms=4), dict(n_seeds=1, seed_sd=0.0)])
def test_identical_arms_false_positive_rate_at_most_alpha(kw):
    r = stats.identical_arms_check(n_sweeps=2000, **kw)
    assert r["false_positive_rate"] <= r["alpha"] + r["margin"], r
    # and the test is not simply silent: it does reject about alpha of the time
    assert r["false_positive_rate"] >= r["alpha"] - r["margin"], r


def test_pooled_question_test_is_fooled_by_seed_noise():
    # why the report uses the seed-level test whenever it has 2+ seeds
    r = stats.identical_arms_check(n_sweeps=2000, n_seeds=3, seed_sd=0.3, test="question")
    assert r["false_positive_rate"] > 0.2


def test_summarize_detects_a_real_difference_and_not_a_null(tmp_path):
    write_arms(tmp_path, "freeze", {"train_both": [0.60, 0.62, 0.61], "train_lm": [0.60, 0.61, 0.62],
                                    "frozen_both": [0.40, 0.41, 0.42]}, n_questions=400)
    t = load_table(tmp_path)
    df, notes = summarize(t, "freeze", ["train_both", "train_lm", "frozen_both"], "train_both",
                          ["eval/synth_vqa/accuracy"])
    df = df.set_index("arm")
    assert df.loc["frozen_both", "mean"] == pytest.approx(0.41)
    assert df.loc["frozen_both", "diff"] == pytest.approx(-0.20)
    # paired t over 3 seeds: diffs -0.20, -0.21, -0.19 -> t = -34.6 (df 2); the null arm: 0, -0.01, +0.01 -> p 1
    assert df.loc["frozen_both", "significant"] and not df.loc["train_lm", "significant"]
    assert df.loc["train_lm", "p"] == pytest.approx(1.0)
    assert df.loc["train_both", "ci_basis"] == "seeds+questions"
    assert df.loc["train_both", "ci_low"] < 0.61 < df.loc["train_both", "ci_high"]
    assert not notes


def test_summarize_one_seed_uses_questions_and_non_mean_metric_has_no_ci(tmp_path):
    write_arms(tmp_path, "tuning", {"full": 0.70, "lora": 0.60}, seeds=(0,), n_questions=500)
    t = load_table(tmp_path)
    df, _ = summarize(t, "tuning", ["full", "lora"], "full", ["eval/synth_vqa/accuracy", "train/stage2/loss"])
    acc = df[df.metric == "eval/synth_vqa/accuracy"].set_index("arm")
    assert acc.loc["full", "ci_basis"] == "questions"
    half = 1.96 * math.sqrt(0.7 * 0.3 / 500)
    assert acc.loc["full", "ci_low"] == pytest.approx(0.70 - half, abs=0.01)
    assert acc.loc["lora", "test"].startswith("sign-flip over questions (1 seed")
    assert acc.loc["lora", "significant"]                  # 10 points on 500 questions: z ~ 3.3 at least
    loss = df[df.metric == "train/stage2/loss"].set_index("arm")
    assert loss.loc["lora", "ci_basis"] == "none" and math.isnan(loss.loc["lora", "p"])


def test_summarize_flags_seeds_that_change_nothing(tmp_path):
    write_arms(tmp_path, "tuning", {"full": 0.6, "lora": [0.5, 0.52, 0.51]}, n_questions=100)
    _, notes = summarize(load_table(tmp_path), "tuning", ["full", "lora"], "full", ["eval/synth_vqa/accuracy"])
    assert notes == ["tuning=full: all 3 seeds give eval/synth_vqa/accuracy = 0.6 exactly; "
                     "is the seed reaching the run?"]
