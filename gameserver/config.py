"""A node's settings, with the embedded defaults that `arbiter up` runs on."""

from __future__ import annotations

from pathlib import Path

import attrs

from .session import Limits

MAX_SNAPSHOT_EVERY = 1_000_000  # ticks between snapshots, at most


@attrs.frozen
class NodeConfig:
    data_dir: Path = Path("data")
    snapshot_every: int = attrs.field(default=100, validator=attrs.validators.in_(range(1, MAX_SNAPSHOT_EVERY + 1)))
    synchronous: str = attrs.field(default="NORMAL", validator=attrs.validators.in_(("NORMAL", "FULL")))
    inbox_size: int = 1024  # messages waiting for the actor; past it, senders wait (see docs)
    inbox_wait_s: float = 1.0  # how long a sender waits for room before its connection is closed (1013)
    outbox_frames: int = 256  # non-state frames queued for one connection; past it: close 4010
    send_timeout_s: float = 10.0  # one frame blocked this long: close 4010
    late_threshold_s: float = 0.025  # a tick that starts later than this after its deadline is late
    # log an event-loop stall this long, with what was running (gameserver/stalls.py); 0: off
    stall_log_s: float = attrs.field(default=0.1, validator=attrs.validators.ge(0))
    events_on_resume: int = 1000  # events replayed to a client that resumes
    limits: Limits = Limits()
    # spectator connections one match admits, and one spectator id (a token's player) holds to one
    # match; past either the join is refused with 1013 (try again later). A player has one connection.
    max_spectators: int = attrs.field(default=64, validator=attrs.validators.ge(0))
    max_spectator_connections: int = attrs.field(default=4, validator=attrs.validators.ge(0))
    token_ttl_s: float = 3600.0
    hibernate_after_s: float = 10.0  # a match not ticking and idle this long leaves memory (inf: never)
    alarm_max_retries: int = 6  # a game alarm whose handler raised this many times more is recorded as failed
    retention_days: float = 0.0  # delete a finished match's file this long after it ended (0: keep)
    alarm_wake_ahead_s: float = 0.1  # a match out of memory is loaded this long before its alarm is due
    # `arbiter up --workers N`: this node is worker `worker` of `workers` and owns the matches
    # whose id hashes to it (gameserver/shards.py); 0 of 1 owns every match
    workers: int = attrs.field(default=1, validator=attrs.validators.in_(range(1, 257)))
    worker: int = attrs.field(default=0)

    @worker.validator
    def _check_worker(self, _attribute: attrs.Attribute, value: int) -> None:
        if not 0 <= value < self.workers:
            raise ValueError(f"worker {value} is not one of 0 to {self.workers - 1}")
