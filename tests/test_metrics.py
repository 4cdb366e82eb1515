"""Metric functions against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scenerec.evaluation.metrics import (
    bootstrap_ci,
    case_metrics,
    hit_rate,
    mean_rank,
    ndcg,
    paired_ratio_ci,
    reciprocal_rank,
    target_positions,
    top_k_columns,
)

INF = float("inf")


def metrics_of(scores, target):
    g, t, ok = target_positions(np.array([scores], dtype=float), np.array([target]))
    return {name: float(v[0]) for name, v in case_metrics(g, t, ok).items()} | {
        "rank": float(mean_rank(g, t, ok)[0])
    }


def test_target_at_rank_one():
    m = metrics_of([0.9, 0.1, 0.5, 0.2], 0)
    expected = {"hr@1": 1.0, "hr@5": 1.0, "hr@10": 1.0, "ndcg@5": 1.0, "ndcg@10": 1.0, "mrr": 1.0}
    assert m == expected | {"rank": 1.0}


def test_target_at_rank_three_exact_values():
    m = metrics_of([0.9, 0.1, 0.5, 0.8], 2)  # 0.9 and 0.8 above it
    assert m["rank"] == 3
    assert m["hr@1"] == 0 and m["hr@5"] == 1 and m["hr@10"] == 1
    assert m["ndcg@5"] == pytest.approx(1 / math.log2(4)) == m["ndcg@10"]
    assert m["mrr"] == pytest.approx(1 / 3)


def test_target_beyond_k():
    scores = list(np.linspace(1.0, 0.0, 20))
    m = metrics_of(scores, 12)  # rank 13
    assert m["rank"] == 13
    assert m["hr@10"] == 0 and m["ndcg@10"] == 0 and m["ndcg@5"] == 0
    assert m["mrr"] == pytest.approx(1 / 13)


def test_rank_six_is_in_top_ten_not_top_five():
    scores = [6, 5, 4, 3, 2, 1.5, 1, 0]
    m = metrics_of(scores, 5)  # rank 6
    assert m["hr@5"] == 0 and m["hr@10"] == 1
    assert m["ndcg@5"] == 0 and m["ndcg@10"] == pytest.approx(1 / math.log2(7))


def test_ties_are_averaged_over_the_tied_positions():
    # one item above, target tied with two others: positions 2, 3, 4 equally likely
    m = metrics_of([0.9, 0.5, 0.5, 0.5, 0.1], 2)
    assert m["rank"] == 3  # 1 + 1 + 2/2
    assert m["hr@1"] == 0
    assert m["hr@5"] == 1
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)) / 3)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)


def test_ties_straddling_k():
    # target tied with 3 others right after 3 better items: positions 4..7, top-5 holds two of four
    m = metrics_of([9, 8, 7, 1, 1, 1, 1, 0], 4)
    assert m["hr@5"] == pytest.approx(2 / 4)
    assert m["hr@1"] == 0
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(5) + 1 / math.log2(6)) / 4)


def test_constant_scores_give_the_random_baseline():
    n = 100
    m = metrics_of([0.0] * n, 37)
    assert m["hr@10"] == pytest.approx(10 / n)
    assert m["hr@1"] == pytest.approx(1 / n)
    assert m["mrr"] == pytest.approx(sum(1 / r for r in range(1, n + 1)) / n)
    assert m["rank"] == pytest.approx((n + 1) / 2)


def test_excluded_or_missing_target_is_a_miss():
    excluded = metrics_of([0.9, -INF, 0.5], 1)
    assert all(excluded[k] == 0 for k in ("hr@1", "hr@10", "ndcg@10", "mrr")) and excluded["rank"] == INF
    missing = metrics_of([0.9, 0.3, 0.5], -1)
    assert missing["hr@10"] == 0 and missing["mrr"] == 0


def test_excluded_candidates_do_not_count_against_the_target():
    m = metrics_of([-INF, -INF, 0.1, 0.2], 2)  # only one finite item above
    assert m["rank"] == 2


def test_nan_scores_rank_last():
    m = metrics_of([float("nan"), 0.2, 0.1], 2)
    assert m["rank"] == 2


def test_vectorised_rows_match_single_rows():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=(50, 30)).astype(float)  # many ties
    targets = rng.integers(0, 30, size=50)
    g, t, ok = target_positions(scores, targets)
    together = case_metrics(g, t, ok)
    for i in range(50):
        alone = metrics_of(list(scores[i]), int(targets[i]))
        for name in together:
            assert together[name][i] == pytest.approx(alone[name])


def test_expected_metrics_equal_the_average_over_tie_breaks():
    """Brute force: average the plain metric over every placement of the target inside its tie group."""
    scores = np.array([[3, 2, 2, 2, 2, 1, 0, 0, 0, 0, 0, 0]], dtype=float)
    g, t, ok = target_positions(scores, np.array([2]))
    positions = range(int(g[0]) + 1, int(g[0] + t[0]) + 2)
    assert hit_rate(g, t, ok, 3)[0] == pytest.approx(np.mean([r <= 3 for r in positions]))
    assert ndcg(g, t, ok, 3)[0] == pytest.approx(np.mean([(r <= 3) / math.log2(r + 1) for r in positions]))
    assert reciprocal_rank(g, t, ok)[0] == pytest.approx(np.mean([1 / r for r in positions]))


def test_bootstrap_ci_contains_the_mean_and_is_deterministic():
    rng = np.random.default_rng(0)
    values = rng.random(300) < 0.1
    first = bootstrap_ci(values, n_bootstrap=500, seed=3)
    assert first == bootstrap_ci(values, n_bootstrap=500, seed=3)
    mean, low, high = first
    assert mean == pytest.approx(values.mean())
    assert low <= mean <= high and low < high
    assert 0.0 <= low and high <= 1.0
    assert bootstrap_ci(values, n_bootstrap=500, seed=4) != first


def test_cluster_bootstrap_is_wider_for_duplicated_cases():
    rng = np.random.default_rng(0)
    per_user = (rng.random(200) < 0.2).astype(float)
    values = np.repeat(per_user, 2)  # two identical cases per user
    users = np.repeat(np.arange(200), 2)
    _, lo_naive, hi_naive = bootstrap_ci(values, n_bootstrap=1000, seed=0)
    mean, lo, hi = bootstrap_ci(values, users, n_bootstrap=1000, seed=0)
    assert mean == pytest.approx(per_user.mean())
    assert (hi - lo) > (hi_naive - lo_naive)


def test_bootstrap_of_nothing_is_nan():
    assert all(math.isnan(v) for v in bootstrap_ci(np.zeros(0)))


def test_paired_ratio_is_the_ratio_of_means_and_exact_for_a_constant_factor():
    rng = np.random.default_rng(1)
    baseline = rng.random(200) * (rng.random(200) < 0.3)
    ratio, low, high = paired_ratio_ci(2 * baseline, baseline, n_bootstrap=300, seed=0)
    assert (ratio, low, high) == pytest.approx((2.0, 2.0, 2.0))  # every resample keeps the factor
    other = rng.random(200) * (rng.random(200) < 0.3)
    ratio, low, high = paired_ratio_ci(other, baseline, n_bootstrap=300, seed=0)
    assert ratio == pytest.approx(other.mean() / baseline.mean())
    assert low < ratio < high


def test_paired_interval_is_narrower_than_the_separate_intervals_suggest():
    # a method that is the baseline plus a little on the same cases: the pairing removes the case-to-case
    # spread both share, so the ratio's interval excludes 1 although the two separate intervals overlap
    rng = np.random.default_rng(2)
    users = np.repeat(np.arange(400), 2)
    baseline = rng.random(800) * (rng.random(800) < 0.2)
    better = baseline * 1.1
    _, _, b_high = bootstrap_ci(baseline, users, n_bootstrap=500, seed=0)
    _, m_low, _ = bootstrap_ci(better, users, n_bootstrap=500, seed=0)
    assert m_low < b_high  # the separate intervals overlap
    ratio, low, _ = paired_ratio_ci(better, baseline, users, n_bootstrap=500, seed=0)
    assert low > 1.0 and ratio == pytest.approx(1.1)


def test_paired_ratio_handles_a_zero_baseline_and_mismatched_inputs():
    ratio, _, high = paired_ratio_ci(np.array([0.5, 0.0]), np.zeros(2), n_bootstrap=50)
    assert math.isinf(ratio) and math.isinf(high)
    assert all(math.isnan(v) for v in paired_ratio_ci(np.zeros(4), np.zeros(4), n_bootstrap=50))
    assert all(math.isnan(v) for v in paired_ratio_ci(np.zeros(0), np.zeros(0)))
    with pytest.raises(ValueError, match="shape"):
        paired_ratio_ci(np.zeros(3), np.zeros(2))


def test_top_k_columns_orders_by_score_then_column_and_drops_excluded():
    scores = np.array([
        [0.1, 0.5, 0.5, -INF, 0.9],
        [-INF, -INF, 0.2, -INF, -INF],
    ])
    top = top_k_columns(scores, 3)
    assert top[0].tolist() == [4, 1, 2]
    assert top[1].tolist() == [2]
    wide_ties = np.zeros((1, 50))
    assert top_k_columns(wide_ties, 10)[0].tolist() == list(range(10))
