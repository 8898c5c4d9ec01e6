"""Which worker owns a match, and where a new one goes: plain functions, no I/O.

With `arbiter up --workers N` every match belongs to exactly one worker process, named by a hash
of its id: `owner(match_id, N)`. The rule needs no table: the HTTP process routes a request by the
id alone, a worker that starts finds its own files among all of them in one data directory, and
a restart with another N simply deals the same files out again. A named match (its id derived from
the name) lands where its id says; a match without a name gets an id drawn until it belongs to the
worker that placement chose (`new_match_id_for`, N draws on average).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import attrs

from .ids import new_match_id

MAX_WORKERS = 256


def owner(match_id: str, workers: int) -> int:
    """The worker (0 to workers - 1) that owns `match_id`. Any string has an owner, so a stray file
    in the data directory is reported by exactly one worker."""
    if workers == 1:
        return 0
    digest = hashlib.blake2b(match_id.encode(), digest_size=8, person=b"arbiter-shard").digest()
    return int.from_bytes(digest, "big") % workers


def new_match_id_for(worker: int, workers: int, draw: Callable[[], str] = new_match_id) -> str:
    """A random match id that `worker` owns."""
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} is not one of 0 to {workers - 1}")
    while True:
        match_id = draw()
        if owner(match_id, workers) == worker:
            return match_id


@attrs.frozen
class Load:
    """What placement compares: the worker's unfinished matches (those it was given since its
    last report included), then its open connections."""

    matches: int
    connections: int


def least_loaded(loads: Sequence[Load | None]) -> int | None:
    """The worker to place a new match on: fewest unfinished matches, then fewest connections,
    then the lowest index. None stands for a worker that is down; None if all are."""
    best: int | None = None
    for index, load in enumerate(loads):
        if load is None:
            continue
        if best is None or (load.matches, load.connections) < (loads[best].matches, loads[best].connections):
            best = index
    return best
