"""The soak's loss check: every input a bot saw acknowledged must be in the server's input log.

A bot numbers its inputs 1, 2, 3, ... in one match. When it saw `acks[me] = n`, it holds that
every input it sent with a seq up to n is logged, except those the server refused with an error
frame carrying their seq. `GET /v1/matches/{id}/inputs` (admin) answers the seqs the match's file
really holds, as [first, last] ranges; an acknowledged seq outside them is a lost input.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import httpx


@attrs.frozen
class Claim:
    """What one bot believes about its inputs in one match."""

    match_id: str
    player: str
    acked: int  # the last acknowledged seq: every seq from 1 to it was sent by this bot
    refused: frozenset[int] = frozenset()  # refused with an error frame: not expected in the log


def lost_seqs(acked: int, refused: Iterable[int], ranges: Iterable[Iterable[int]], limit: int | None = None) -> list[int]:
    """The seqs in 1..acked, not refused, that no [first, last] range covers (at most `limit`)."""
    refused = set(refused)
    lost: list[int] = []
    expected = 1  # the smallest seq not yet accounted for
    for first, last in sorted((int(a), int(b)) for a, b in ranges):
        if first > acked:
            break
        for seq in range(expected, first):
            if seq not in refused:
                lost.append(seq)
                if limit is not None and len(lost) >= limit:
                    return lost
        expected = max(expected, last + 1)
    for seq in range(expected, acked + 1):
        if seq not in refused:
            lost.append(seq)
            if limit is not None and len(lost) >= limit:
                return lost
    return lost


def count_lost(acked: int, refused: Iterable[int], ranges: Iterable[Iterable[int]]) -> int:
    return len(lost_seqs(acked, refused, ranges))


class CheckFailed(Exception):
    """The server's input log could not be read (the check could not be made)."""


async def logged_ranges(admin: httpx.AsyncClient, match_id: str) -> dict[str, list[list[int]]]:
    """Every player's logged seqs in a match, from the server (`admin` carries the admin token)."""
    try:
        response = await admin.get(f"/v1/matches/{match_id}/inputs")
        response.raise_for_status()
        return response.json()["players"]
    except httpx.HTTPStatusError as error:
        raise CheckFailed(f"GET /v1/matches/{match_id}/inputs: {error.response.status_code}") from None
    except (httpx.HTTPError, ValueError, KeyError) as error:
        raise CheckFailed(f"GET /v1/matches/{match_id}/inputs: {type(error).__name__}: {error}") from None


async def check(admin: httpx.AsyncClient, claim: Claim, limit: int = 10) -> tuple[int, list[int]]:
    """(lost inputs, the first `limit` of their seqs) of one claim, against the server's log."""
    ranges = (await logged_ranges(admin, claim.match_id)).get(claim.player, [])
    lost = lost_seqs(claim.acked, claim.refused, ranges)
    return len(lost), lost[:limit]
