"""The registry gate: which aliases a newly registered version gets.

``challenger`` when it beats popularity on the holdout; ``champion`` when it is also no
worse than the current champion (or a reviewer sets it, in review mode). The decision's
reason is recorded on the version so a reviewer can follow it in the MLflow UI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs.config import Settings
from jobs.model.registry import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass
class GateResult:
    challenger: bool
    champion: bool
    reason: str


def gate(
    metric: float,
    baseline: float,
    champion: float | None,
    settings: Settings,
) -> GateResult:
    """Decide the aliases of a new version from its holdout metric (NDCG@K)."""
    needed = baseline * (1 + settings.gate_min_lift)
    if metric < needed or metric <= 0:
        return GateResult(
            False,
            False,
            f"rejected: {metric:.4f} does not beat popularity {baseline:.4f} by "
            f"{settings.gate_min_lift:.0%} (needs {needed:.4f})",
        )
    if champion is not None and metric < champion - settings.gate_tolerance:
        return GateResult(
            True,
            False,
            f"challenger: beats popularity ({metric:.4f} vs {baseline:.4f}) but is worse "
            f"than the champion ({champion:.4f}) beyond the tolerance {settings.gate_tolerance}",
        )
    if settings.review_mode:
        return GateResult(
            True, False, f"challenger: {metric:.4f}; review mode: a reviewer sets champion"
        )
    against = "no champion yet" if champion is None else f"champion {champion:.4f}"
    return GateResult(True, True, f"champion: {metric:.4f} vs popularity {baseline:.4f}, {against}")


def apply_gate(client: MlflowClient, name: str, version: str, result: GateResult) -> None:
    """Move the aliases as decided and record the decision on the version."""
    client.set_model_version_tag(name, version, "recflow.gate", result.reason)
    if result.challenger:
        client.set_registered_model_alias(name, CHALLENGER, version)
    if result.champion:
        client.set_registered_model_alias(name, CHAMPION, version)
        client.set_model_version_tag(name, version, "recflow.promoted_at", str(int(time.time())))
