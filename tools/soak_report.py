"""`arbiter soak`'s figures: merging the bot processes' results, the live progress line, the
summary table, the exit status. Plain functions over dicts, no I/O but the display's."""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from typing import Any

from tools.bench_arena import percentiles

BUCKET_MS = 0.1  # clients.bots.LATENCY_BUCKET_MS: the results' latency buckets
PLAIN_PROGRESS_EVERY_S = 10.0  # without a terminal: one progress line this often
RATE_WINDOW_S = 5.0  # inputs/s over this many seconds


def merge(results: list[dict], *, bots: int, run_s: float) -> dict[str, Any]:
    """The bot processes' `result` bodies, merged into the report's bot figures."""
    buckets: dict[int, int] = {}
    reconnect_buckets: dict[int, int] = {}
    errors: dict[str, int] = {}
    info: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    ended: set[str] = set()
    joined: set[str] = set()
    lost_examples: list[dict] = []
    for r in results:
        for bucket, n in r["latency_buckets"].items():
            buckets[int(bucket)] = buckets.get(int(bucket), 0) + n
        for bucket, n in r["reconnect_buckets"].items():
            reconnect_buckets[int(bucket)] = reconnect_buckets.get(int(bucket), 0) + n
        for kind, n in r["errors_by_kind"].items():
            errors[kind] = errors.get(kind, 0) + n
        for kind, n in r["info"].items():
            info[kind] = info.get(kind, 0) + n
        for kind, found in r["error_examples"].items():
            examples.setdefault(kind, []).extend(found[: 3 - len(examples.get(kind, []))])
        ended.update(r["ended_matches"])
        joined.update(r["joined_matches"])
        lost_examples.extend(r["lost_examples"][: 5 - len(lost_examples)])

    def total(key: str) -> int:
        return sum(r[key] for r in results)

    bot_cpu_s = sum(r["cpu_s"] for r in results)
    return {
        "bots": bots,
        "matches_played": len(ended),
        "matches_joined": len(joined),
        "inputs_sent": total("sent"), "inputs_acked": total("acked"), "inputs_lost": total("lost"),
        "inputs_unacked": total("unacked"), "inputs_refused": total("refused"),
        "latency_ms": percentiles(buckets, BUCKET_MS, max((r["latency_max_ms"] for r in results), default=0.0)),
        "errors": dict(sorted(errors.items())),
        "reconnects": total("reconnects"), "drops": total("drops"),
        "reconnect_ms": percentiles(reconnect_buckets, 1.0, max(((b + 1) for b in reconnect_buckets), default=0)),
        "seats_checked": total("seats_checked"),
        "bot_cpu_s": round(bot_cpu_s, 2),
        "bot_cpu_per_1000_bots": round(bot_cpu_s / run_s / bots * 1000, 3) if run_s > 0 and bots else None,
        "info": dict(sorted(info.items())),
        "error_examples": examples, "lost_examples": lost_examples,
    }


def exit_status(report: dict) -> int:
    """1 if an input was lost or a bot hit an unexpected error, else 0."""
    return 1 if report["inputs_lost"] or report["errors"] else 0


class Progress:
    """The latest `progress` of every bot process, and the line that sums them up."""

    def __init__(self, processes: int, bots: int, duration_s: float):
        self.latest: list[dict | None] = [None] * processes
        self.recent: list[dict[int, int]] = [{} for _ in range(processes)]
        self.bots, self.duration_s = bots, duration_s
        self.started_at: float | None = None
        self.marks: deque[tuple[float, int]] = deque()  # (when, inputs sent by all), the last few seconds

    def update(self, process: int, body: dict) -> None:
        self.latest[process] = body
        self.recent[process] = {int(k): n for k, n in body.get("recent_buckets", {}).items()}
        now = time.monotonic()
        self.marks.append((now, sum(p["sent"] for p in self.latest if p is not None)))
        while now - self.marks[0][0] > RATE_WINDOW_S:
            self.marks.popleft()

    def line(self) -> str:
        seen = [p for p in self.latest if p is not None]
        if not seen:
            return "soak: starting"
        s = {key: sum(p[key] for p in seen) for key in ("in_match", "queued", "sent", "acked", "matches",
                                                         "reconnects", "errors", "lost")}
        (first_at, first_sent), (last_at, last_sent) = self.marks[0], self.marks[-1]
        inputs_per_s = (last_sent - first_sent) / (last_at - first_at) if last_at > first_at else 0.0
        merged: dict[int, int] = {}
        for recent in self.recent:
            for bucket, n in recent.items():
                merged[bucket] = merged.get(bucket, 0) + n
        p99 = percentiles(merged, BUCKET_MS, math.inf)["p99"]
        elapsed = "" if self.started_at is None else f"{min(time.monotonic() - self.started_at, self.duration_s):.0f}/"
        return (f"soak {elapsed}{self.duration_s:g} s | bots in a match {s['in_match']}/{self.bots}, queued "
                f"{s['queued']} | matches {s['matches']} | inputs/s {inputs_per_s:,.0f} | p99 "
                f"{'-' if p99 is None else f'{p99:.0f}'} ms | reconnects {s['reconnects']} | "
                f"errors {s['errors']} | lost {s['lost']}")


class Display:
    """Live progress on stderr: a rich status line on a terminal, else a plain line now and then."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.live = None
        self.last_plain = time.monotonic()
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live(progress.line(), console=Console(stderr=True), refresh_per_second=2, transient=True)

    def __enter__(self) -> Display:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.progress.line())
        elif time.monotonic() - self.last_plain >= PLAIN_PROGRESS_EVERY_S:
            self.last_plain = time.monotonic()
            print(self.progress.line(), file=sys.stderr, flush=True)


def table(report: dict, file: Any) -> None:
    """The summary, as a rich table on `file`."""
    from rich.console import Console
    from rich.table import Table

    lat = report["latency_ms"]
    server = report.get("server") or {}
    t = Table(title=f"arbiter soak: {report['game']}, {report['bots']} bots, {report['duration_s']:g} s",
              show_header=False)
    t.add_column(style="bold")
    t.add_column()
    rows = [
        ("matches played (ended) / joined", f"{report['matches_played']} / {report['matches_joined']}"),
        ("inputs sent / acked / lost", (f"{report['inputs_sent']} / {report['inputs_acked']} / "
                                        f"{report['inputs_lost']}  ({report['seats_checked']} seats checked "
                                        "against the server's logs)")),
        ("inputs unacked at the end / refused", f"{report['inputs_unacked']} / {report['inputs_refused']}"),
        ("latency ms p50 / p95 / p99 / max", f"{lat['p50']} / {lat['p95']} / {lat['p99']} / {lat['max']}"),
        ("drops / reconnects", (f"{report['drops']} / {report['reconnects']}  (churn "
                                f"{report['churn_per_min']:g} drops per bot per minute)")),
        ("reconnect ms p50 / p95 / p99 / max", " / ".join("-" if report["reconnect_ms"][k] is None
                                                           else str(report["reconnect_ms"][k])
                                                           for k in ("p50", "p95", "p99", "max"))),
        ("errors", ", ".join(f"{k}: {n}" for k, n in report["errors"].items()) or "none"),
        ("expected events", ", ".join(f"{k}: {n}" for k, n in report["info"].items()) or "none"),
        ("bot CPU", (f"{report['bot_cpu_s']} s in {report['bot_processes']} process(es): "
                     f"{report['bot_cpu_per_1000_bots']} CPU s per s per 1,000 bots")),
    ]
    if server:
        rows.append(("server", (f"pid {server['pid']}, CPU {server['cpu_pct']} % of a core, peak RSS "
                                f"{server['rss_mb']} MB, {server['log_errors']} ERROR lines in its log")))
    rows.append(("other CPU %", f"{report['other_cpu_pct']} (the rest of the machine, this driver included)"))
    rows += [("warning", w) for w in report["warnings"]]
    rows.append(("result", "FAILED: inputs lost or unexpected errors" if exit_status(report) else "ok"))
    for name, value in rows:
        t.add_row(name, value)
    Console(file=file, width=max(100, Console(file=file).width)).print(t)
