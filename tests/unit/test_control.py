"""The control group: a stable, keyed, uniform bucket of users (jobs.model.control)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from jobs.config import load_settings
from jobs.model.control import control_mask, group_of, in_control

SETTINGS = load_settings(subject_secret="a-subject-secret-for-tests", control_share=0.05)


@given(st.text(min_size=1, max_size=40))
def test_a_user_always_lands_in_the_same_group(user_id: str) -> None:
    first = in_control(user_id, SETTINGS)
    again = load_settings(subject_secret="a-subject-secret-for-tests", control_share=0.05)
    assert in_control(user_id, again) is first
    assert group_of(user_id, SETTINGS) == ("control" if first else "treatment")


def test_the_share_is_near_the_setting_over_many_ids() -> None:
    n = 40_000
    ids = [f"user-{i}" for i in range(n)]
    for share in (0.05, 0.2, 0.5):
        settings = load_settings(subject_secret="a-subject-secret-for-tests", control_share=share)
        got = control_mask(ids, settings).mean()
        # 5 standard errors of a binomial proportion: fails only if the bucket is biased.
        assert abs(got - share) < 5 * math.sqrt(share * (1 - share) / n), (share, got)


def test_mask_and_single_decision_agree() -> None:
    ids = [f"u{i}" for i in range(2_000)]
    mask = control_mask(ids, SETTINGS)
    assert mask.tolist() == [in_control(u, SETTINGS) for u in ids]
    assert mask.any() and not mask.all()


def test_zero_share_disables_the_control_group() -> None:
    off = load_settings(subject_secret="a-subject-secret-for-tests", control_share=0.0)
    ids = [f"u{i}" for i in range(5_000)]
    assert not control_mask(ids, off).any()
    assert not any(in_control(u, off) for u in ids[:100])


def test_the_group_depends_on_the_secret_so_users_cannot_pick_it() -> None:
    other = load_settings(subject_secret="another-secret-entirely!", control_share=0.05)
    ids = [f"u{i}" for i in range(20_000)]
    a, b = control_mask(ids, SETTINGS), control_mask(ids, other)
    # Independent buckets: the overlap of two 5 % groups is about 0.25 %, not 5 %.
    assert (a & b).mean() < 0.01


def test_raising_the_share_only_adds_users() -> None:
    ids = [f"u{i}" for i in range(10_000)]
    small = control_mask(ids, SETTINGS)
    larger = control_mask(
        ids, load_settings(subject_secret="a-subject-secret-for-tests", control_share=0.1)
    )
    assert np.all(larger[small])
