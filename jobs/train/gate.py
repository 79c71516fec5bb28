"""The registry gate: which aliases a newly registered version gets, and why.

Reads: the new version's test metrics and those of the incumbents on the same test slice
(the ``champion`` and the ``best`` version the gate ever accepted), each with the paired
bootstrap interval of the relative NDCG difference (:mod:`jobs.train.stats`). Writes:
aliases (``challenger``, ``champion``, ``best``), the decision on the version's tags and
a Markdown report (``gate/report.md``) in the training run's artifacts, which is what a
reviewer reads in the MLflow UI.

- ``challenger`` when it beats popularity by ``gate_min_lift`` (relative);
- ``champion`` when, against every incumbent, the lower bound of the paired bootstrap
  interval of the relative NDCG difference is at least ``-gate_max_relative_drop``
  (non-inferiority: the data must show the new version is not worse by more than the
  margin), and review mode is off;
- ``best`` when it is champion and its NDCG is at least every incumbent's.

Why the lower bound and not "reject only a significant drop": with that rule a small or
noisy test slice passes anything (nothing is ever significant), and a broken model on
thin data could replace a good one. Requiring the interval to clear the margin means the
champion stays when the evidence is too thin; with the same recipe on the same data the
difference is exactly zero and the new version passes. Without intervals (a run logged
before they existed) the point estimate is its own bound.

Fair comparison: the incumbents are not their old artifacts scored on the new slice —
those were trained on most of the newest interactions, and excluding what a model saw
would forbid it to recommend exactly what it is graded on. The training refits each
incumbent's recipe (its hyperparameters) on the challenger's training split, so both
are unseen on the same held-out interactions (:func:`jobs.train.training.evaluate_on_test`).

The bar is relative (a 5 % drop is 0.005 NDCG at 0.10 and 0.02 at 0.40) and is set by
the best accepted version, not by the last one: each promotion may be a little worse
than the champion, but never worse than that margin below the best, so a chain of
promotions cannot ratchet the quality down. Both incumbents are re-scored on this run's
test slice, so the comparison is on the same users and items.

Whenever the champion moves, ``best`` becomes the better of the new champion and the
incumbents; an absent ``best`` (a registry from before it, its version deleted) is set to
the champion before gating (logged; a warning when it disappeared), so the bar is never
lost. Non-finite incumbent or baseline metrics cannot be compared: such a version stays
a challenger. ``recflow promote``/``rollback-model`` and the champion watcher keep
``best`` the same way (:func:`jobs.model.promotion.settle_best`).

The champion alias moves by compare-and-set (:func:`jobs.model.promotion.promote`): if it
changed since the comparison (an overlapping run, a reviewer), the version stays a
challenger and the refusal is its recorded decision; a retry that finds the version
already champion (the first try died after the move) records the promotion.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobs.config import Settings
from jobs.model.promotion import (
    ChampionMovedError,
    best_missing,
    ensure_best,
    promote,
    set_best,
)
from jobs.model.registry import BEST, CHALLENGER, CHAMPION, alias_version

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
TAG_GATE = "recflow.gate"  # the reason, one line (kept from the first gate)
TAG_DECISION = "recflow.gate.decision"  # rejected | challenger | champion | refused
REPORT_PATH = "gate/report.md"


@dataclass(frozen=True)
class Incumbent:
    """A registered version the new one is compared with, scored on the same test slice.

    ``low``/``high``: the interval of the new version's relative NDCG difference to this
    one (``new / this - 1``, paired bootstrap over users); ``None`` when not computed.
    """

    role: str  # "champion" or "best"
    version: str
    ndcg: float
    low: float | None = None
    high: float | None = None

    def lower_bound(self, metric: float) -> float:
        """The relative difference the gate holds against the margin."""
        if self.low is not None and math.isfinite(self.low):
            return self.low
        return metric / self.ndcg - 1 if self.ndcg > 0 else math.inf

    def interval(self) -> str:
        if self.low is None or self.high is None:
            return "—"
        return f"[{self.low:+.1%}, {self.high:+.1%}]"


@dataclass
class GateResult:
    challenger: bool
    champion: bool
    reason: str
    decision: str = ""
    metric: float | None = None
    baseline: float | None = None
    bar: float | None = None
    reference: Incumbent | None = None
    incumbents: list[Incumbent] = field(default_factory=list)
    new_best: bool = False
    # Other baselines on the same slice (EASE, …): shown in the report, not decided on.
    others: dict[str, float] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        """The decision as version tags (searchable, and visible in the UI's version page)."""
        out = {TAG_GATE: self.reason[:5000], TAG_DECISION: self.decision}
        for key, value in (
            ("metric", self.metric),
            ("popularity", self.baseline),
            ("bar", self.bar),
        ):
            if value is not None:
                out[f"recflow.gate.{key}"] = f"{value:.5f}"
        for inc in self.incumbents:
            out[f"recflow.gate.{inc.role}_version"] = inc.version
            out[f"recflow.gate.{inc.role}_ndcg"] = f"{inc.ndcg:.5f}"
            if inc.low is not None and inc.high is not None:
                out[f"recflow.gate.{inc.role}_diff_low"] = f"{inc.low:.5f}"
                out[f"recflow.gate.{inc.role}_diff_high"] = f"{inc.high:.5f}"
        return out


def gate(
    metric: float,
    baseline: float,
    incumbents: list[Incumbent],
    settings: Settings,
) -> GateResult:
    """Decide the aliases of a new version from its holdout metric (NDCG@K)."""
    result = GateResult(
        False, False, "", "rejected", metric=metric, baseline=baseline, incumbents=incumbents
    )
    needed = baseline * (1 + settings.gate_min_lift)
    if math.isfinite(metric) and metric > 0:
        broken = [f"popularity {baseline}"] if not math.isfinite(baseline) else []
        broken += [
            f"{i.role} v{i.version} {i.ndcg}" for i in incumbents if not math.isfinite(i.ndcg)
        ]
        if broken:
            # NaN compares false with everything: it would pass every bar. What cannot be
            # compared is never promoted; a reviewer may still promote it.
            result.challenger, result.decision = True, "challenger"
            result.reason = (
                f"challenger: {metric:.4f} cannot be compared, non-finite "
                f"{', '.join(broken)} on this test slice; not promoted (a reviewer may)"
            )
            return result
    if not math.isfinite(metric) or metric < needed or metric <= 0:
        result.reason = (
            f"rejected: {metric:.4f} does not beat popularity {baseline:.4f} by "
            f"{settings.gate_min_lift:.0%} (needs {needed:.4f})"
        )
        return result
    result.challenger, result.decision = True, "challenger"
    margin = settings.gate_max_relative_drop
    # The binding incumbent: the one against which the new version might lose the most.
    reference = min(incumbents, key=lambda inc: inc.lower_bound(metric), default=None)
    result.reference = reference
    if reference is not None:
        result.bar = reference.ndcg * (1 - margin)
        bound = reference.lower_bound(metric)
        if bound < -margin:
            interval = (
                f", {settings.gate_confidence:.0%} interval of the paired difference "
                f"{reference.interval()}"
                if reference.low is not None
                else ""
            )
            result.reason = (
                f"challenger: beats popularity ({metric:.4f} vs {baseline:.4f}) but may be "
                f"{-bound:.1%} below the {reference.role} v{reference.version} "
                f"({reference.ndcg:.4f} on this test slice{interval}); at most "
                f"{margin:.0%} is allowed (bar {result.bar:.4f})"
            )
            return result
    result.new_best = all(metric >= inc.ndcg for inc in incumbents)
    against = (
        "no champion yet"
        if reference is None
        else f"{reference.role} v{reference.version} {reference.ndcg:.4f} (bar {result.bar:.4f}"
        + (f", difference {reference.interval()}" if reference.low is not None else "")
        + ")"
    )
    if settings.review_mode:
        result.reason = (
            f"challenger: {metric:.4f} vs popularity {baseline:.4f} and {against}; "
            "review mode: a reviewer sets champion"
        )
        result.new_best = False
        return result
    result.champion, result.decision = True, "champion"
    result.reason = f"champion: {metric:.4f} vs popularity {baseline:.4f} and {against}"
    return result


def apply_gate(
    client: MlflowClient,
    name: str,
    version: str,
    result: GateResult,
    expected_champion: str | None,
    run_id: str | None = None,
) -> GateResult:
    """Move the aliases as decided and record it; returns the decision as carried out.

    ``expected_champion`` is the champion the comparison was made against: the champion
    alias moves only if it still is (compare-and-set; its promotion tags carry the
    reason). The decision tags and the report follow, then ``challenger`` and ``best``.
    MLflow errors propagate: the caller's task fails and is retried, nothing is assumed.
    """
    if result.champion:
        try:
            promote(
                client,
                name,
                version,
                expected_champion,
                by=f"gate (training run {run_id})" if run_id else "gate",
                reason=result.reason,
            )
        except ChampionMovedError as exc:
            result.champion, result.new_best, result.decision = False, False, "refused"
            result.reason = f"challenger: passed the gate but not promoted: {exc}"
    # Written after the compare-and-set so a refusal is what the version says; before
    # the challenger and best aliases, so those never point at a version without reason.
    for tag, value in result.tags().items():
        client.set_model_version_tag(name, version, tag, value)
    if run_id is not None:
        client.log_text(run_id, report(name, version, result), REPORT_PATH)
        client.set_tag(run_id, TAG_GATE, result.reason[:5000])
        client.set_tag(run_id, TAG_DECISION, result.decision)
    if result.challenger:
        current = alias_version(client, name, CHALLENGER)
        # Newest wins: an overlapping older run finishing last does not take it back.
        if current is None or int(current.version) < int(version):
            client.set_registered_model_alias(name, CHALLENGER, version)
    if result.champion:
        _keep_best(client, name, version, result)
    log.info("gate v%s: %s", version, result.reason)
    return result


def _keep_best(client: MlflowClient, name: str, version: str, result: GateResult) -> None:
    """After a promotion: ``best`` is the better of the new champion and the incumbents on
    this test slice (the new version when ``new_best``, else the reference). An absent
    ``best`` (deleted meanwhile) is set again, so the bar never silently disappears."""
    target = version if result.new_best or result.reference is None else result.reference.version
    current = alias_version(client, name, BEST)
    why = "best on this test slice"
    if current is None:
        why = best_missing(client, name, version)
    if current is None or str(current.version) != str(target):
        set_best(client, name, str(target), why)


def incumbents_of(client: MlflowClient, name: str) -> tuple[Any | None, list[tuple[str, str]]]:
    """The champion, and the ``(role, version)`` pairs a new version is compared with.

    ``best`` is set to the champion first when absent (a registry from before it, or its
    version deleted; logged), so the relative bar always comes from the best accepted
    version and promotions each a little worse cannot ratchet the quality down.
    """
    best = ensure_best(client, name)
    champion = alias_version(client, name, CHAMPION)
    pairs = [
        (role, str(found.version))
        for role, found in (("champion", champion), ("best", best))
        if found is not None
    ]
    if len(pairs) == 2 and pairs[0][1] == pairs[1][1]:
        pairs = pairs[:1]
    return champion, pairs


def report(name: str, version: str, result: GateResult) -> str:
    """The decision as a reviewer reads it: the verdict, the numbers side by side, why."""
    rows = [
        ("this version", f"v{version}", result.metric, ""),
        ("popularity", "(same data)", result.baseline, ""),
        *[(inc.role, f"v{inc.version}", inc.ndcg, inc.interval()) for inc in result.incumbents],
        *[(name, "(same data)", value, "") for name, value in result.others.items()],
    ]
    lines = [
        f"# Gate: {name} v{version} — {result.decision or 'undecided'}",
        "",
        result.reason,
        "",
        "| model | version | NDCG@K on this run's test slice | this version vs it (interval) |",
        "|---|---|---|---|",
        *[f"| {role} | {ver} | {_num(value)} | {diff} |" for role, ver, value, diff in rows],
        "",
    ]
    if result.bar is not None and result.reference is not None:
        lines.append(
            f"Bar: {_num(result.bar)} = the best incumbent ({result.reference.role} "
            f"v{result.reference.version}) less the allowed relative drop. Promotion needs "
            "the lower end of each paired interval at or above minus that drop."
        )
    lines.append(
        "Incumbents are refitted with their own hyperparameters on this run's training split "
        "and scored on the same held-out interactions, unseen by both. Intervals: paired "
        "bootstrap over users. The aliases: `challenger` beat popularity, `champion` is "
        "published, `best` sets the bar for the next version."
    )
    return "\n".join(lines) + "\n"


def _num(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}"
