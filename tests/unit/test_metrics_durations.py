"""`metrics.Durations` against prometheus_client's own `Histogram`: the same values observed one
at a time there and many at a time here expose the same samples."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from batchgate.metrics import LATENCY, Durations

# on and around the bounds (a value equal to a bound is in that bucket), beyond the last, zero
VALUES = [0.0, 0.0005, 0.001, 0.0011, 0.0025, 0.003, 0.01, 0.25, 0.2500001, 1, 59.9, 60, 61, 3600]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_the_same_values_expose_the_same_samples_as_a_histogram() -> None:
    reference, ours = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram("job_seconds", "How long.", ["action"], buckets=LATENCY, registry=reference)
    durations = Durations("job_seconds", "How long.", "action", LATENCY)
    ours.register(durations)
    for action, values in (("a.b", VALUES), ("c.*", VALUES[3:7]), ("a.b", [0.02, 0.02])):
        for value in values:
            histogram.labels(action).observe(value)
        durations.observe_many(action, values)

    expected = samples(reference)
    assert samples(ours) == expected
    assert expected[("job_seconds_count", (("action", "a.b"),))] == len(VALUES) + 2
    assert expected[("job_seconds_bucket", (("action", "a.b"), ("le", "0.001")))] == 3
    assert b"# TYPE job_seconds histogram" in generate_latest(ours)


def test_nothing_observed_exposes_no_samples() -> None:
    registry = CollectorRegistry()
    registry.register(Durations("job_seconds", "How long.", "action", LATENCY))
    assert samples(registry) == {}


def test_observations_from_many_threads_are_all_counted() -> None:
    durations = Durations("job_seconds", "How long.", "action", LATENCY)
    registry = CollectorRegistry()
    registry.register(durations)

    def observe() -> None:
        for _ in range(500):
            durations.observe_many("a.b", [0.001, 0.5])

    threads = [threading.Thread(target=observe) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = samples(registry)
    assert found[("job_seconds_count", (("action", "a.b"),))] == 4 * 500 * 2
    assert found[("job_seconds_bucket", (("action", "a.b"), ("le", "0.001")))] == 4 * 500
    assert found[("job_seconds_sum", (("action", "a.b"),))] == pytest.approx(4 * 500 * 0.501)
