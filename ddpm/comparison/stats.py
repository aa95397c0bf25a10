"""How sure a comparison is: a mean's 95% interval over seeds, and whether two settings differ.

Pure functions on plain numbers. Seeds are noise a researcher can measure: a setting trained
with several seeds has a mean, a sample std (ddof=1) and a Student-t 95% interval; two settings
measured on the same seeds are compared seed by seed (a paired t-test, which cancels what a
seed does to both), otherwise by Welch's t-test. :func:`verdict` calls a difference a win only
when the test supports it; everything else is "not established".
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as _scipy

LEVEL = 0.95  # every interval here is a 95% one
ALPHA = 0.05  # a win needs p below this


@dataclass(frozen=True)
class Summary:
    """Mean, sample std and the 95% interval of the mean of ``n`` values; with n = 1 there is
    no spread to measure, so ``std``, ``low`` and ``high`` are None (never NaN)."""

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.high is None else (self.high - self.mean)


@dataclass(frozen=True)
class Test:
    """A two-setting test of ``a - b``: the mean difference, its 95% interval and p-value.

    ``n``: pairs for the paired test, ``(n_a, n_b)`` for Welch's."""

    name: str  # "paired t-test" or "Welch t-test"
    n: int | tuple[int, int]
    difference: float
    low: float
    high: float
    p: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Verdict:
    """Whether ``a`` beats ``b``: ``win`` or ``not established``, the test behind it (None when
    none could run) and one line that says which test decided and why."""

    win: bool
    test: Test | None
    reason: str

    @property
    def word(self) -> str:
        return "win" if self.win else "not established"

    @property
    def text(self) -> str:
        return f"{self.word} ({self.reason})"


def t_quantile(df: float) -> float:
    """The two-sided 95% Student-t critical value (4.302653 at df=2)."""
    return float(_scipy.t.ppf(0.5 + LEVEL / 2, df))


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sample std (ddof=1) and the t interval mean +- t_{0.975,n-1} std/sqrt(n)."""
    if not values:
        raise ValueError("summarize: no values")
    n, mean = len(values), math.fsum(values) / len(values)
    if n == 1:
        return Summary(1, float(values[0]), None, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def paired_test(a: Sequence[float], b: Sequence[float]) -> Test:
    """Paired t-test of ``a[i] - b[i]`` (the same seed i in both), n >= 2 pairs."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired_test: needs >= 2 pairs, got {len(a)} and {len(b)} values")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    s = summarize(diffs)
    assert s.std is not None and s.low is not None and s.high is not None
    if s.std == 0:  # every seed moved by the same amount: certain, unless that amount is 0
        p = 1.0 if s.mean == 0 else 0.0
    else:
        p = float(_scipy.t.sf(abs(s.mean) / (s.std / math.sqrt(s.n)), s.n - 1) * 2)
    return Test("paired t-test", s.n, s.mean, s.low, s.high, p)


def welch_test(a: Sequence[float], b: Sequence[float]) -> Test:
    """Welch's t-test of mean(a) - mean(b) (no shared seeds), n >= 2 on each side; the
    interval uses the Welch-Satterthwaite degrees of freedom."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"welch_test: needs >= 2 values a side, got {len(a)} and {len(b)}")
    sa, sb = summarize(a), summarize(b)
    assert sa.std is not None and sb.std is not None
    va, vb = sa.std**2 / sa.n, sb.std**2 / sb.n
    diff, se = sa.mean - sb.mean, math.sqrt(va + vb)
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
        return Test("Welch t-test", (sa.n, sb.n), diff, diff, diff, p)
    df = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))
    half = t_quantile(df) * se
    p = float(_scipy.t.sf(abs(diff) / se, df) * 2)
    return Test("Welch t-test", (sa.n, sb.n), diff, diff - half, diff + half, p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``m`` p-values tested together, in their given order.

    Testing several settings against one baseline gives each a chance to pass by luck; Holm
    keeps the chance that any of them does below ``ALPHA``: the k-th smallest p is multiplied
    by ``m - k + 1``, made non-decreasing, and capped at 1. Compare the result with ``ALPHA``.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare_settings(a: Mapping[Hashable, float], b: Mapping[Hashable, float]) -> Test | None:
    """``a - b`` for two settings keyed by seed: paired over the seeds they share (>= 2 of
    them), else Welch's t-test on all values; None when neither can run (n = 1 somewhere)."""
    shared = [k for k in a if k in b]
    if len(shared) >= 2:
        return paired_test([a[k] for k in shared], [b[k] for k in shared])
    if len(a) >= 2 and len(b) >= 2:
        return welch_test(list(a.values()), list(b.values()))
    return None


def verdict(
    a: Mapping[Hashable, float], b: Mapping[Hashable, float], lower_is_better: bool = True
) -> Verdict:
    """Whether setting ``a`` beats ``b``. With >= 2 shared seeds the paired test decides
    (p < 0.05 and its interval excluding 0, in ``a``'s favour); without pairs, the two 95%
    intervals of the means must not overlap. Anything else is not established."""
    test = compare_settings(a, b)
    better = (lambda d: d < 0) if lower_is_better else (lambda d: d > 0)
    if test is not None and test.name == "paired t-test":
        said = f"paired t-test over {test.n} seeds, p={test.p:.3g}"
        if test.p < ALPHA and test.excludes_zero and better(test.difference):
            return Verdict(True, test, f"{said}, 95% CI excludes 0")
        if test.p < ALPHA and test.excludes_zero:
            return Verdict(False, test, f"{said}: the difference favours the other")
        return Verdict(False, test, f"{said}, 95% CI includes 0")
    sa, sb = summarize(list(a.values())), summarize(list(b.values()))
    if sa.low is None or sb.low is None:
        n = min(sa.n, sb.n)
        return Verdict(False, test, f"n={n}: no interval, and fewer than 2 shared seeds to pair")
    assert sa.high is not None and sb.high is not None
    apart = sa.high < sb.low or sb.high < sa.low
    if apart and better(sa.mean - sb.mean):
        return Verdict(True, test, "unpaired: the 95% intervals do not overlap")
    if apart:
        return Verdict(False, test, "unpaired: the 95% intervals favour the other")
    return Verdict(False, test, "unpaired: the 95% intervals overlap")
