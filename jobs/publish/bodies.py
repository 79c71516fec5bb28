"""Building the users' objects of a publish: gzip JSON bytes and their MD5, in key order.

Reads the staged arrays of :mod:`jobs.publish.steps` (one block of rows at a time);
writes nothing: the uploader PUTs what this returns.

Building is CPU work (JSON, gzip, MD5: ~0.1 ms an object) while uploading waits on the
network or the disk, so the blocks are built in a process pool (``RECFLOW_PUBLISH_ENCODE_
WORKERS``) while the calling thread's upload pool PUTs the previous ones. The pool's
processes start from the forkserver, never by forking the caller: a publish may run
beside a Spark JVM gateway and MLflow threads, and a fork of a threaded process can
inherit a held lock. Each process gets the per-publish constants once (item ids, the
user-body popular list, model metadata) and then only its block's rows.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.model.control import CONTROL, TREATMENT
from jobs.model.ranking import round_scores
from jobs.publish import layout

# Rows per task: large enough that pickling a block costs little next to encoding it,
# small enough that the upload pool is never idle for long.
BLOCK = 2_000


@dataclass(frozen=True)
class Constants:
    """What every block needs and no row changes."""

    prefix: str
    slot: int
    meta: dict[str, Any]
    item_ids: np.ndarray
    popular: dict[str, Any]  # the user-body form (no per-publish fields)
    level: int


@dataclass(frozen=True)
class Block:
    """Rows of the stage, already in object-key order."""

    keys: list[str]
    idx: np.ndarray
    scores: np.ndarray
    control: np.ndarray


_CONSTANTS: Constants | None = None


def _init(constants: Constants) -> None:
    global _CONSTANTS
    _CONSTANTS = constants


def encode_block(block: Block, constants: Constants | None = None) -> list[tuple[str, bytes, str]]:
    """(object key, gzip JSON, MD5 hex) of every row of ``block``, in its order."""
    c = constants or _CONSTANTS
    assert c is not None, "encode_block needs constants (or a pool initialised with them)"
    out = []
    control_body = layout.encode({**c.popular, "group": CONTROL}, c.level)
    fallback = layout.encode({**c.popular, "group": TREATMENT}, c.level)
    for row, key in enumerate(block.keys):
        keep = block.idx[row] >= 0
        if block.control[row]:  # served popularity, so personalization's lift can be measured
            data = control_body
        elif keep.any():
            items = c.item_ids[block.idx[row][keep]].tolist()
            body = layout.user_body(c.meta, "als", items, round_scores(block.scores[row][keep]))
            body["group"] = TREATMENT
            data = layout.encode(body, c.level)
        else:  # nothing left to personalise (all seen or out of stock)
            data = fallback
        out.append((layout.slot_user_key(c.prefix, c.slot, key), data, layout.md5_hex(data)))
    return out


def blocks(keys: list[str], staged: dict[str, np.ndarray], control: np.ndarray) -> Iterator[Block]:
    """The stage cut into blocks of rows in object-key order (one shard after the other)."""
    order = np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)
    for lo in range(0, len(order), BLOCK):
        rows = order[lo : lo + BLOCK]
        yield Block(
            keys=[keys[r] for r in rows],
            idx=staged["idx"][rows],
            scores=staged["scores"][rows],
            control=control[rows],
        )


def encoded(
    constants: Constants, parts: Iterator[Block], workers: int
) -> Iterator[list[tuple[str, bytes, str]]]:
    """Each block's objects, in order; built in ``workers`` processes (0: in this thread)."""
    if workers <= 0:
        for block in parts:
            yield encode_block(block, constants)
        return
    pool = pool_for(constants, workers)
    try:
        # A bounded window of blocks in flight: memory stays flat at any number of users.
        window: list[Any] = []
        for block in parts:
            window.append(pool.submit(encode_block, block))
            if len(window) > 2 * workers:
                yield window.pop(0).result()
        for future in window:
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def pool_for(constants: Constants, workers: int) -> Executor:
    context = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init, initargs=(constants,)
    )
