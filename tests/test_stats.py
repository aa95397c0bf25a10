"""ddpm.comparison.stats against closed forms: a mean's t interval, the paired and Welch
t-tests, and the verdict rule (a win only when the deciding test says so)."""

from __future__ import annotations

import math

import pytest

from ddpm.comparison.stats import (
    compare_settings,
    holm,
    paired_test,
    summarize,
    t_quantile,
    verdict,
    welch_test,
)

T_975_2 = 4.302652729749462  # the two-sided 95% Student-t value at 2 degrees of freedom
T_975_3 = 3.182446305284263


def test_three_values_give_mean_2_std_1_and_the_t_interval():
    s = summarize([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    half = T_975_2 * 1 / math.sqrt(3)  # 4.302653 * 0.57735 = 2.484137
    assert s.half_width == pytest.approx(2.484137, abs=1e-6)
    assert (s.low, s.high) == pytest.approx((2 - half, 2 + half), abs=1e-12)
    assert t_quantile(2) == pytest.approx(T_975_2, abs=1e-9)


def test_one_value_has_no_interval_and_says_so():
    s = summarize([0.25])
    assert (s.n, s.mean, s.std, s.low, s.high, s.half_width) == (1, 0.25, None, None, None, None)
    with pytest.raises(ValueError, match="no values"):
        summarize([])
    said = verdict({0: 1.0}, {0: 2.0})
    assert not said.win and said.test is None
    assert said.text == "not established (n=1: no interval, and fewer than 2 shared seeds to pair)"


def test_a_paired_set_with_a_known_difference():
    # b = a + 1 +- 0.1: differences 1.1, 0.9, 1.0, 1.0 -> mean 1, std sqrt(0.02/3)
    a = [10.0, 20.0, 30.0, 40.0]
    b = [11.1, 20.9, 31.0, 41.0]
    t = paired_test(b, a)
    std = math.sqrt(0.02 / 3)
    half = T_975_3 * std / 2
    assert t.name == "paired t-test" and t.n == 4
    assert t.difference == pytest.approx(1.0, abs=1e-12)
    assert (t.low, t.high) == pytest.approx((1 - half, 1 + half), abs=1e-9)
    # t = 1 / (std / 2) = 24.49; two-sided p at 3 df, closed form for odd df:
    # p = 1 - (2/pi) (atan(x) + x / (1 + x^2)) with x = t / sqrt(3)
    x = (1 / (std / 2)) / math.sqrt(3)
    p = 1 - (2 / math.pi) * (math.atan(x) + x / (1 + x**2))
    assert t.p == pytest.approx(p, rel=1e-6)
    # the seeds' spread (10 .. 40) is huge, but pairing removes it: a win for a (lower)
    said = verdict(dict(enumerate(a)), dict(enumerate(b)))
    assert said.win and said.test == paired_test(a, b)
    assert said.text.startswith("win (paired t-test over 4 seeds, p=")
    assert said.text.endswith("95% CI excludes 0)")
    # higher is better (precision): the same gap favours b
    flipped = verdict(dict(enumerate(a)), dict(enumerate(b)), lower_is_better=False)
    assert not flipped.win and "favours the other" in flipped.reason


def test_welch_without_shared_seeds_and_the_overlap_rule():
    a, b = [1.0, 2.0, 3.0], [5.0, 6.0, 7.0]  # equal n and std: Welch's df = 2(n-1) = 4
    t = welch_test(a, b)
    se = math.sqrt(1 / 3 + 1 / 3)
    assert t.name == "Welch t-test" and t.n == (3, 3) and t.difference == -4.0
    assert t.high - t.difference == pytest.approx(t_quantile(4) * se, rel=1e-9)
    # x = |t| / sqrt(df) with df = 4 (even): p = 1 - x / sqrt(1 + x^2) (1 + 1 / (2 (1 + x^2)))
    x = 4 / se / 2
    assert t.p == pytest.approx(1 - x / math.sqrt(1 + x**2) * (1 + 1 / (2 * (1 + x**2))))
    seeds_a = {("trainer.seed=0",): 1.0, ("trainer.seed=1",): 2.0, ("trainer.seed=2",): 3.0}
    seeds_b = {("trainer.seed=3",): 5.0, ("trainer.seed=4",): 6.0, ("trainer.seed=5",): 7.0}
    assert compare_settings(seeds_a, seeds_b) == t
    # intervals 2 +- 2.48 and 6 +- 2.48 overlap (4.48 > 3.52): not established, though p < 0.05
    said = verdict(seeds_a, seeds_b)
    assert t.p < 0.05 and not said.win
    assert said.text == "not established (unpaired: the 95% intervals overlap)"
    far = {k: v + 10 for k, v in seeds_b.items()}  # 16 +- 2.48: apart
    assert verdict(seeds_a, far).text == "win (unpaired: the 95% intervals do not overlap)"


def test_a_paired_difference_whose_interval_holds_0_is_not_established():
    a = {0: 1.0, 1: 2.0, 2: 3.0}
    b = {0: 1.5, 1: 1.5, 2: 3.1}  # differences -0.5, 0.5, -0.1
    said = verdict(a, b)
    assert said.test is not None and said.test.name == "paired t-test"
    assert said.test.low < 0 < said.test.high and said.test.p > 0.05 and not said.win
    assert said.reason.endswith("95% CI includes 0")
    # identical seeds: zero spread, zero difference -> p = 1, never a division by zero
    same = verdict(a, dict(a))
    assert same.test is not None and same.test.p == 1.0 and not same.win


def test_holm_multiplies_the_kth_smallest_p_by_m_minus_k_plus_1_and_keeps_the_order():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, 2 * 0.03, max(0.06, 1 * 0.04): given order kept
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06], abs=1e-12)
    assert holm([0.02, 0.03]) == pytest.approx([0.04, 0.04], abs=1e-12)  # both pass at 0.05
    assert holm([0.6, 0.2]) == pytest.approx([0.6, 0.4], abs=1e-12)
    assert holm([0.9, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm([0.03]) == [0.03] and holm([]) == []
