"""`arbiter replay export`: a match's ticks, inputs and events as JSON lines or CSV, for analysis.

One record per row, in tick order; within a tick: the tick, then its inputs (every logged command:
joins, leaves, inputs, alarms that fired, reservations) in arrival order, then its events.

- `tick`: `tick`, `at` (the step's time, Unix seconds), `ticked` (whether the game's tick ran),
  `checksum` (of the state after the step)
- `input`: `tick`, `idx`, `kind`, `player`, `seq`, `data` (the input's JSON)
- `event`: `tick`, `idx`, `kind`, `data`

CSV has one header, `type,tick,idx,kind,player,seq,at,ticked,checksum,data`, with `data` as JSON
text. Everything is read in one read transaction: a live match is exported as it was when read.
"""

from __future__ import annotations

import csv
import heapq
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from gameserver.storage import DAMAGED_CONTENT, CorruptFile, MatchStore

from tools.replay_progress import Progress

FORMATS = ("jsonl", "csv")
CSV_COLUMNS = ("type", "tick", "idx", "kind", "player", "seq", "at", "ticked", "checksum", "data")


def records(store: MatchStore) -> Iterator[dict[str, Any]]:
    """Every record, in order (call inside a read transaction for a consistent view)."""
    conn = store.conn
    ticks = ((t, 0, 0, {"type": "tick", "tick": t, "at": at, "ticked": bool(ticked), "checksum": c})
             for t, c, at, ticked in conn.execute("SELECT tick, checksum, at, ticked FROM checksums ORDER BY tick"))
    # the log through the reader that checks each command against what Arbiter writes (CorruptFile if not)
    inputs = ((t, 1, i, {"type": "input", "tick": t, "idx": i, "kind": c.kind, "player": c.player, "seq": c.seq,
                         "data": c.data})
              for t, batch in store.commands_after(0) for i, c in enumerate(batch))
    events = ((t, 2, i, {"type": "event", "tick": t, "idx": i, "kind": kind, "data": _json(data)})
              for t, i, kind, data in conn.execute("SELECT tick, idx, kind, data FROM events ORDER BY tick, idx"))
    try:
        for _t, _order, _idx, record in heapq.merge(ticks, inputs, events, key=lambda row: row[:3]):
            yield record
    except DAMAGED_CONTENT as error:  # an event's data that is not JSON text
        raise CorruptFile(f"{store.path}: damaged: an event's data (events.data) is not JSON "
                          f"({type(error).__name__}: {error})") from None


def export(store: MatchStore, fmt: str, out: TextIO, progress: Progress | None = None) -> dict[str, int]:
    """Write every record to `out`; returns the count of each type."""
    counts = {"tick": 0, "input": 0, "event": 0}
    store.conn.execute("BEGIN")  # one read snapshot
    try:
        if progress is not None:
            progress.total = max(store.meta().tick, 1)
        writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        for record in records(store):
            kind = record["type"]
            counts[kind] += 1
            if writer is None:
                out.write(encode(record) + "\n")
            else:
                row = dict(record)
                row["data"] = encode(row["data"]) if "data" in row and row["data"] is not None else ""
                if "ticked" in row:
                    row["ticked"] = int(row["ticked"])
                writer.writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])
            if kind == "tick" and progress is not None and not record["tick"] & 1023:
                progress(record["tick"])
    finally:
        store.conn.execute("COMMIT")
        if progress is not None:
            progress.close()
    return counts


def open_output(path: Path | None, source: Path) -> TextIO:
    """stdout, or a new file at `path` (refusing the match file itself and its SQLite companions)."""
    if path is None:
        return sys.stdout
    resolved = path.resolve()
    if resolved in {source.resolve(), Path(f"{source.resolve()}-wal"), Path(f"{source.resolve()}-shm")}:
        raise ValueError(f"{path} is the match file (or its log): choose another --output")
    return path.open("w", encoding="utf-8", newline="")


def _json(data: str | None) -> Any:
    return json.loads(data) if data is not None else None  # (not JSON: `records` says the file is damaged)
