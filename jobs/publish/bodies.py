"""Building the users' objects of a publish: gzip JSON bytes and their MD5, in key order.

Reads the staged arrays of :mod:`jobs.publish.steps` (one block of rows at a time);
writes nothing: the uploader PUTs what this returns.

Building is CPU work (JSON, gzip, MD5: ~0.1 ms an object) while uploading waits on the
network or the disk, so the blocks are built in a process pool (``RECFLOW_PUBLISH_ENCODE_
WORKERS``) while the calling thread's upload pool PUTs the previous ones. Each process
gets the per-publish constants once (item ids, the user-body popular list, model
metadata) and then only its block's rows.

The processes are forked. The forkserver and spawn start methods were measured first:
each of their processes imports the caller's ``__main__`` again (for an Airflow task, a
test run or a script importing MLflow, seconds each — 67 s for two processes on this
loaded 2-core machine), more than the encoding they save. Forking a process that has
other threads (MLflow's, a Spark gateway's) is safe here because the child runs only
this module's pure function — numpy indexing, orjson, zlib, hashlib — and takes no lock
another thread could have held at the fork (no logging, no I/O, no BLAS call).
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
    # Whole-block numpy work first (a per-row lookup, mask and rounding cost ~40 us an
    # object); empty slots (-1) are cut per row below.
    keep = block.idx >= 0
    counts = keep.sum(axis=1)
    # The scorer fills a row from rank 1 and pads the end with -1; a row with a hole
    # elsewhere (a score that overflowed to +inf is dropped where it sorted) is compacted.
    holes = np.flatnonzero(np.cumprod(keep, axis=1).sum(axis=1) != counts)
    idx, raw = block.idx, block.scores
    if len(holes):
        idx, raw = idx.copy(), raw.copy()
        for row in holes:
            n = counts[row]
            idx[row, :n], raw[row, :n] = idx[row][keep[row]], raw[row][keep[row]]
    counts = counts.tolist()
    items = c.item_ids[np.where(idx >= 0, idx, 0)].tolist()
    scores = round_scores(raw)
    skeleton = layout.user_body(c.meta, "als", [], [])
    for row, key in enumerate(block.keys):
        n = counts[row]
        if block.control[row]:  # served popularity, so personalization's lift can be measured
            data = control_body
        elif n:
            ranked = zip(items[row][:n], scores[row][:n], strict=True)
            body = {
                **skeleton,
                "items": [
                    {"item_id": item, "rank": rank, "score": score}
                    for rank, (item, score) in enumerate(ranked, start=1)
                ],
                "group": TREATMENT,
            }
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
    context = multiprocessing.get_context("fork")
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init, initargs=(constants,)
    )
