"""The lock-free metrics the tick loop updates expose exactly what prometheus_client's would."""

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gameserver.metrics import LoopCounter, LoopHistogram

BUCKETS = (0.0001, 0.001, 0.01, 0.1, 1.0)
AMOUNTS = st.lists(st.one_of(st.sampled_from(BUCKETS), st.floats(min_value=0, max_value=10, allow_nan=False)),
                   max_size=50)


@given(AMOUNTS, st.lists(st.integers(min_value=0, max_value=1000), max_size=20))
def test_loop_metrics_expose_what_prometheus_client_would(amounts, increments):
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histograms = (LoopHistogram("h_seconds", "a histogram", buckets=BUCKETS, registry=ours),
                  Histogram("h_seconds", "a histogram", buckets=BUCKETS, registry=theirs))
    counters = (LoopCounter("c", "a counter", registry=ours), Counter("c", "a counter", registry=theirs))
    for amount in amounts:  # bucket bounds themselves included: a bucket is `le`
        for histogram in histograms:
            histogram.observe(amount)
    for amount in increments:
        for counter in counters:
            counter.inc(amount)
    assert generate_latest(ours) == generate_latest(theirs)


def test_a_name_cannot_be_registered_twice():
    registry = CollectorRegistry(auto_describe=True)
    LoopCounter("c", "a counter", registry=registry)
    try:
        Counter("c", "a counter", registry=registry)
    except ValueError:
        return
    raise AssertionError("a duplicate metric name was accepted")
