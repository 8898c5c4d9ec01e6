"""Prometheus metrics of a node, in a registry of its own (so tests and several nodes don't mix)."""

from __future__ import annotations

import math
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

disable_created_metrics()  # the *_created series only add noise to every scrape

_TICK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
_STALL_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_COMMIT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.live_matches = Gauge("arbiter_live_matches", "Match actors in memory", registry=r)
        self.connections = Gauge("arbiter_connections", "Open WebSocket connections", registry=r)
        self.ticks = LoopCounter("arbiter_ticks", "Ticks run", registry=r)
        self.late_ticks = Counter("arbiter_late_ticks", "Ticks started more than the lateness "
                                  "threshold after their deadline, plus deadlines skipped", registry=r)
        self.tick_duration = LoopHistogram("arbiter_tick_duration_seconds", "Time to run, commit and "
                                           "send one tick", buckets=_TICK_BUCKETS, registry=r)
        self.tick_lateness = LoopHistogram("arbiter_tick_lateness_seconds", "How long after its deadline "
                                           "a tick started", buckets=_TICK_BUCKETS, registry=r)
        self.inputs = LoopCounter("arbiter_inputs", "Inputs applied (rate() gives inputs/s)", registry=r)
        self.inputs_rejected = Counter("arbiter_inputs_rejected", "Inputs not applied", ["code"], registry=r)
        self.commit = LoopHistogram("arbiter_commit_seconds", "SQLite commit latency of one tick",
                                    buckets=_COMMIT_BUCKETS, registry=r)
        self.matches_finished = Counter("arbiter_matches_finished", "Matches that ended, crashed or "
                                        "failed", ["status"], registry=r)
        self.activation = Histogram("arbiter_activation_seconds", "Time to load and re-simulate a "
                                    "match on activation", registry=r)
        self.alarms_fired = Counter("arbiter_alarms_fired", "Game alarms and timers whose handler ran", registry=r)
        self.alarm_retries = Counter("arbiter_alarm_retries", "Game alarm handlers that raised and were rescheduled",
                                     registry=r)
        self.alarms_failed = Counter("arbiter_alarms_failed", "Game alarms recorded as failed after their retries",
                                     registry=r)
        self.alarm_lateness = Histogram("arbiter_alarm_lateness_seconds", "How long after its due time an alarm ran",
                                        buckets=_TICK_BUCKETS, registry=r)
        self.hibernations = Counter("arbiter_hibernations", "Matches that left memory while idle", registry=r)
        self.hibernated = Gauge("arbiter_hibernated_matches", "Matches out of memory with connections kept open",
                                registry=r)
        self.slow_consumers = Counter("arbiter_slow_consumer_disconnects", "Connections closed "
                                      "because they did not read", registry=r)
        self.loop_stalls = Histogram("arbiter_loop_stall_seconds", "Stalls of the event loop longer than "
                                     "the logging threshold (--stall-log-ms): from its last I/O poll before "
                                     "to its first after", buckets=_STALL_BUCKETS, registry=r)


# The metrics every tick updates (a few per tick of every match) cost about 1 us a counter increment
# and 2 us a histogram observation in prometheus_client, which takes a lock for each value it adds
# to. These are only ever updated from the node's event loop, so they need no lock: a plain addition
# (and a bisect), exposed to the registry as custom collectors. A scrape from another thread reads
# plain numbers; at worst a bucket and the sum disagree by the observation in flight.

class LoopCounter:
    def __init__(self, name: str, documentation: str, *, registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.value = 0.0
        registry.register(self)

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation)]

    def collect(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation, value=self.value)]


class LoopHistogram:
    def __init__(self, name: str, documentation: str, *, buckets: tuple[float, ...],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = [*sorted(buckets), math.inf]  # Prometheus buckets are `le`: bisect_left finds the first bound >= a value
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        registry.register(self)

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> list[HistogramMetricFamily]:
        cumulative, buckets = 0, []
        for bound, count in zip(self.bounds, list(self.counts)):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, self.sum)
        return [family]
