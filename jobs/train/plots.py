"""Figures logged to each training run: what a reviewer looks at before promoting."""

from __future__ import annotations

import numpy as np

METRICS = ("precision", "recall", "ndcg", "map")


def metric_curves(als_curve: dict[int, dict[str, float]], pop_curve: dict[int, dict[str, float]]):
    """Precision/recall/NDCG/MAP at each K, ALS against popularity on the test slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(als_curve)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(14, 3.2))
    for ax, name in zip(axes, METRICS, strict=True):
        for label, curve in (("ALS", als_curve), ("popularity", pop_curve)):
            ax.plot(ks, [curve[k][f"{name}_at_{k}"] for k in ks], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_title(f"{name}@K")
        ax.set_xlabel("K")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    return fig


def popularity_of_recommendations(rec_idx: np.ndarray, popularity: np.ndarray, k: int):
    """Share of recommendations per item-popularity decile, against the catalog's 10 %.

    A model that only echoes the best sellers piles up in the first decile.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-popularity, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    decile = (rank * 10) // max(len(order), 1)
    recs = rec_idx[rec_idx >= 0]
    share = np.bincount(decile[recs], minlength=10) / max(len(recs), 1)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(np.arange(1, 11), share, label=f"ALS top-{k}")
    ax.axhline(0.1, color="grey", linestyle="--", label="catalog (10 % per decile)")
    ax.set_xlabel("item popularity decile (1 = most popular)")
    ax.set_ylabel("share of recommendations")
    ax.legend()
    fig.tight_layout()
    return fig


def log_all(
    als_curve: dict[int, dict[str, float]],
    pop_curve: dict[int, dict[str, float]],
    rec_idx: np.ndarray,
    popularity: np.ndarray,
    k: int,
) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    for name, fig in (
        ("plots/metrics_at_k.png", metric_curves(als_curve, pop_curve)),
        (
            "plots/popularity_of_recommendations.png",
            popularity_of_recommendations(rec_idx, popularity, k),
        ),
    ):
        mlflow.log_figure(fig, name)
        plt.close(fig)
