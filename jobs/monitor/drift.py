"""Drift statistics: Population Stability Index (numeric and categorical) and two-sample KS.

Pure functions over numpy arrays and count mappings (no Spark), so every number the drift
run writes can be checked by hand. Reads nothing, writes nothing.

PSI = Σ_b (c_b − r_b) · ln(c_b / r_b) over bins b, where r_b and c_b are the shares of the
reference and current samples in bin b. Thresholds (the credit-scoring convention PSI comes
from: Siddiqi, *Credit Risk Scorecards*, Wiley 2006, ch. 8; restated by Yurdakul,
"Statistical Properties of Population Stability Index", Western Michigan University,
2018): below 0.1 no significant shift (``ok``), 0.1 to 0.2 a moderate shift worth a look
(``warn``), 0.2 and above a significant shift (``alert``). They are settings
(``drift_psi_warn``, ``drift_psi_alert``), these are their defaults.

Rules for awkward input, so nothing crashes deep inside numpy:

- an empty sample (reference or current) raises :class:`EmptySampleError`: a statistic of
  nothing is not zero drift, and the caller decides what to record;
- NaN or ±inf raises :class:`NonFiniteError` naming the metric: a count or score that is not
  finite is a bug upstream, not a shift;
- an empty bin gets the share ``eps`` (1e-4 by default) instead of 0, the usual remedy,
  so the logarithm stays finite; a category seen on one side only is such a bin;
- a constant reference (one distinct value c) gets the bins (−∞, c), [c, c], (c, ∞), so a
  move in either direction away from c counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Level = Literal["ok", "warn", "alert"]
Statistic = Literal["psi", "ks", "share", "drop"]

PSI_WARN = 0.1
PSI_ALERT = 0.2
DEFAULT_BINS = 10
DEFAULT_EPS = 1e-4


class EmptySampleError(ValueError):
    """A sample has no values: there is no distribution to compare."""


class NonFiniteError(ValueError):
    """A sample holds NaN or ±inf."""


@dataclass(frozen=True)
class DriftResult:
    """One statistic of one metric, with the thresholds it was judged by and its level.

    For ``psi`` and ``share`` rows ``value`` is compared with ``warn_at``/``alert_at``. For
    ``ks`` rows ``value`` is the KS statistic D: the level is ``warn`` when ``p_value`` is
    below ``warn_at`` (the significance level α) and ``alert`` when, in addition, D reaches
    ``alert_at``. On millions of events any difference is significant, so a p-value alone
    must not retrain a model: the alert needs an effect size too.
    """

    metric: str
    stat: Statistic
    value: float
    level: Level
    p_value: float | None = None
    warn_at: float | None = None
    alert_at: float | None = None
    n_reference: int = 0
    n_current: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def level_of(value: float, warn_at: float, alert_at: float) -> Level:
    """``alert`` at or above ``alert_at``, ``warn`` at or above ``warn_at``, else ``ok``."""
    if value >= alert_at:
        return "alert"
    return "warn" if value >= warn_at else "ok"


def _finite(values: npt.ArrayLike, metric: str, side: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise EmptySampleError(f"{metric}: the {side} sample is empty")
    bad = ~np.isfinite(array)
    if bad.any():
        raise NonFiniteError(
            f"{metric}: the {side} sample holds {int(bad.sum())} NaN/inf value(s) of {array.size}"
        )
    return array


def quantile_edges(reference: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Inner bin edges: the reference's 1/bins … (bins−1)/bins quantiles, deduplicated.

    Bin i holds the values in (edge[i−1], edge[i]] (outer bins open-ended), so each holds
    about 1/bins of the reference. Ties collapse edges (fewer bins, never empty-by-design
    ones); a constant reference gets the edges c⁻ and c (see the module docstring).
    """
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    edges = np.unique(np.quantile(reference, np.arange(1, bins) / bins))
    if np.unique(reference).size == 1:
        c = float(reference[0])
        edges = np.array([np.nextafter(c, -np.inf), c])
    return edges


def shares(values: np.ndarray, edges: np.ndarray, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Share of ``values`` in each bin of ``edges`` (empty bins get ``eps``)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
    return np.maximum(counts / values.size, eps)


def _psi(ref_shares: np.ndarray, cur_shares: np.ndarray) -> float:
    value = float(np.sum((cur_shares - ref_shares) * np.log(cur_shares / ref_shares)))
    # Each term is ≥ 0 in exact arithmetic; rounding may leave −1e-17 for equal shares.
    return max(value, 0.0)


def psi(
    reference: npt.ArrayLike,
    current: npt.ArrayLike,
    bins: int = DEFAULT_BINS,
    eps: float = DEFAULT_EPS,
    metric: str = "psi",
) -> float:
    """PSI of a numeric sample against a reference, on the reference's quantile bins."""
    ref = _finite(reference, metric, "reference")
    cur = _finite(current, metric, "current")
    edges = quantile_edges(ref, bins)
    return _psi(shares(ref, edges, eps), shares(cur, edges, eps))


def psi_categorical(
    reference: Mapping[str, float],
    current: Mapping[str, float],
    eps: float = DEFAULT_EPS,
    metric: str = "psi",
) -> float:
    """PSI of two count tables (category → count), each category one bin.

    Categories of either side count (one seen only now gets the reference share ``eps``):
    the form is symmetric in its two arguments.
    """
    ref_counts = _counts(reference, metric, "reference")
    cur_counts = _counts(current, metric, "current")
    categories = sorted(set(ref_counts) | set(cur_counts))
    ref = np.array([ref_counts.get(c, 0.0) for c in categories])
    cur = np.array([cur_counts.get(c, 0.0) for c in categories])
    return _psi(np.maximum(ref / ref.sum(), eps), np.maximum(cur / cur.sum(), eps))


def _counts(counts: Mapping[str, float], metric: str, side: str) -> dict[str, float]:
    values = _finite(list(counts.values()), metric, side) if counts else np.array([])
    if values.size == 0 or values.sum() <= 0:
        raise EmptySampleError(f"{metric}: the {side} counts are empty")
    if (values < 0).any():
        raise ValueError(f"{metric}: the {side} counts hold negative values")
    return dict(zip(counts.keys(), values.tolist(), strict=True))


def ks(reference: npt.ArrayLike, current: npt.ArrayLike, metric: str = "ks") -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov test (SciPy, two-sided): statistic D and p-value."""
    from scipy.stats import ks_2samp

    ref = _finite(reference, metric, "reference")
    cur = _finite(current, metric, "current")
    result = ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)


def numeric_results(
    metric: str,
    reference: npt.ArrayLike,
    current: npt.ArrayLike,
    psi_warn: float = PSI_WARN,
    psi_alert: float = PSI_ALERT,
    ks_alpha: float = 0.01,
    ks_alert: float = 0.1,
    bins: int = DEFAULT_BINS,
) -> list[DriftResult]:
    """PSI and KS of one numeric metric, each with its level.

    A PSI at alert level counts as an alert only when the KS test on the same samples
    rejects "same distribution" at ``ks_alpha``; otherwise it is a warning. PSI is biased
    upward on small samples (with no change at all its expected value is about
    (B − 1)(1/n + 1/m) for B bins: 0.05 for 200 items against 1,200 item-days), and one
    day of a small catalog reaches 0.2 by chance often enough to retrain a model for
    nothing (seen on a quiet week of the reacting shop, BENCHMARKS.md). An alert
    retrains, so it needs a significant difference too; on large samples the two agree.
    """
    ref = _finite(reference, metric, "reference")
    cur = _finite(current, metric, "current")
    value = psi(ref, cur, bins=bins, metric=metric)
    stat, p_value = ks(ref, cur, metric=metric)
    ks_level: Level = "ok"
    if p_value < ks_alpha:
        ks_level = "alert" if stat >= ks_alert else "warn"
    psi_level = level_of(value, psi_warn, psi_alert)
    if psi_level == "alert" and p_value >= ks_alpha:
        psi_level = "warn"  # not significant: see the docstring
    n = {"n_reference": int(ref.size), "n_current": int(cur.size)}
    return [
        DriftResult(metric, "psi", value, psi_level, None, psi_warn, psi_alert, **n),
        DriftResult(metric, "ks", stat, ks_level, p_value, ks_alpha, ks_alert, **n),
    ]  # fmt: skip


def categorical_result(
    metric: str,
    reference: Mapping[str, float],
    current: Mapping[str, float],
    psi_warn: float = PSI_WARN,
    psi_alert: float = PSI_ALERT,
) -> DriftResult:
    """PSI of one categorical metric (count tables), with its level."""
    value = psi_categorical(reference, current, metric=metric)
    return DriftResult(
        metric,
        "psi",
        value,
        level_of(value, psi_warn, psi_alert),
        None,
        psi_warn,
        psi_alert,
        n_reference=int(sum(reference.values())),
        n_current=int(sum(current.values())),
    )


def share_result(
    metric: str,
    reference_share: float,
    current_share: float,
    alert_at: float,
    n_reference: int = 0,
    n_current: int = 0,
) -> DriftResult:
    """A share compared with its reference share: the level is judged on the absolute rise.

    ``value`` is ``current − reference`` (a fall of the unknown-user share is no reason
    to retrain); ``warn`` from half of ``alert_at``.
    """
    for side, share in (("reference", reference_share), ("current", current_share)):
        if not (math.isfinite(share) and 0.0 <= share <= 1.0):
            raise ValueError(f"{metric}: the {side} share {share!r} is not within [0, 1]")
    value = current_share - reference_share
    warn_at = alert_at / 2
    return DriftResult(
        metric,
        "share",
        value,
        level_of(value, warn_at, alert_at),
        None,
        warn_at,
        alert_at,
        n_reference,
        n_current,
    )


def ctr_drop_result(
    metric: str,
    reference_days: list[tuple[int, int]],
    current: tuple[int, int],
    alert_at: float,
    alpha: float,
) -> DriftResult:
    """A click-through rate against its baseline days: the relative drop, and whether it is
    real.

    ``reference_days`` and ``current`` are (clicks, impressions), one pair per baseline
    day. ``value`` is ``1 − current CTR / pooled reference CTR`` (0.25: a quarter of the
    clicks lost; a rise is negative and never alerts); ``p_value`` is the one-sided
    two-proportion z-test of "current CTR below the reference's" (pooled variance). A
    level needs all three: a drop of at least ``alert_at`` (half of it for a warning),
    p below ``alpha``, and a current CTR below every baseline day's. Real daily CTRs
    vary more than a binomial says (who comes that day, what is in stock), so the z-test
    alone fires on about 2 % of quiet days instead of 1 %; below every one of n baseline
    days happens by chance on 1 in n + 1 quiet days, so together they keep a quiet week
    quiet. Raises :class:`EmptySampleError` without impressions on either side or without
    reference clicks (no rate to compare).

    Why the inputs alone are not enough: when tastes move between categories the mix of
    what people browse can stay nearly the same while the lists learnt on the old tastes
    stop being clicked. That shows only in the outcome, which is the drift that matters.
    """
    from scipy.stats import norm

    for side, (c, n) in [*(("reference", d) for d in reference_days), ("current", current)]:
        if not 0 <= c <= n:
            raise ValueError(f"{metric}: {side} clicks {c} not within 0..{n} impressions")
    days = [(c, n) for c, n in reference_days if n > 0]
    c_ref, n_ref = sum(c for c, _ in days), sum(n for _, n in days)
    c_cur, n_cur = current
    if n_ref <= 0 or n_cur <= 0:
        side = "reference" if n_ref <= 0 else "current"
        raise EmptySampleError(f"{metric}: no {side} impressions")
    if c_ref == 0:
        raise EmptySampleError(f"{metric}: no reference clicks (no rate to drop from)")
    p_ref, p_cur = c_ref / n_ref, c_cur / n_cur
    value = 1.0 - p_cur / p_ref
    pooled = (c_ref + c_cur) / (n_ref + n_cur)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_ref + 1.0 / n_cur))
    p_value = float(norm.sf((p_ref - p_cur) / se)) if se > 0 else 1.0
    level: Level = "ok"
    if p_value < alpha and p_cur < min(c / n for c, n in days):
        level = level_of(value, alert_at / 2, alert_at)
    return DriftResult(metric, "drop", value, level, p_value, alert_at / 2, alert_at, n_ref, n_cur)
