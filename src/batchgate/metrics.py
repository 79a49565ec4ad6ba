"""Prometheus metrics of one process: what happens (counters, histograms) and what is (gauges).

Labels have bounded values only: an action is named as registered (`namespace.action`), a
forwarded namespace's action as `namespace.*`, anything else as `other`; an asyncId never, and an
account only when the operator asks for it (`--metrics-accounts`), since accounts are unbounded.
The gauges of the whole system (queue depth, oldest waiting batch, deliveries waiting, workers) are
read from the store by the admin listener before each scrape, so every process reports the same.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from batchgate import __version__


class Durations(Collector):
    """A histogram with one label, observed many values at a time (`observe_many`): a
    `Histogram`'s `observe` per value takes two locks and walks the buckets in Python, which cost
    more than the rest of a finished job's bookkeeping; here a value is a bisect and an increment,
    under one lock per call. Exposed as Prometheus's histogram: cumulative `_bucket`s, `_count`
    and `_sum`."""

    def __init__(self, name: str, documentation: str, label: str, buckets: Iterable[float]) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.bounds = tuple(sorted(float(bound) for bound in buckets))
        self._counts: dict[str, list[int]] = {}  # label -> per bucket (not cumulative), +Inf last
        self._sums: dict[str, float] = {}
        self._lock = threading.Lock()  # scrapes may read from another thread

    def observe_many(self, value: str, seconds: Iterable[float]) -> None:
        bounds = self.bounds
        with self._lock:
            counts = self._counts.get(value)
            if counts is None:
                counts = self._counts[value] = [0] * (len(bounds) + 1)
            total = 0.0
            for amount in seconds:
                counts[bisect_left(bounds, amount)] += 1  # the first bucket whose bound is >= it
                total += amount
            self._sums[value] = self._sums.get(value, 0.0) + total

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        with self._lock:
            taken = [(value, list(counts), self._sums[value]) for value, counts in self._counts.items()]
        edges = [*(str(bound) for bound in self.bounds), "+Inf"]  # as Histogram spells them: 1.0, 0.0025
        for value, counts, total in taken:
            cumulative, running = [], 0
            for edge, count in zip(edges, counts, strict=True):
                running += count
                cumulative.append((edge, float(running)))
            family.add_metric([value], cumulative, total)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=[self.label])


REGISTRY = CollectorRegistry(auto_describe=True)
# The process's CPU, memory and open files, and the Python it runs on, as every exporter has them.
REGISTRY.register(PROCESS_COLLECTOR)
REGISTRY.register(PLATFORM_COLLECTOR)
Info("batchgate_build", "The batchgate version this process runs.", registry=REGISTRY).info(
    {"version": __version__}
)
LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LONG = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400)

BATCHES = Counter(
    "batchgate_batches", "Batches by what happened to them: submitted, started, complete, cancelled.",
    ["event", "account"], registry=REGISTRY,
)  # fmt: skip
JOBS = Counter(
    "batchgate_jobs", "Jobs finished, by outcome (succeeded, failed, cancelled) and action.",
    ["outcome", "action", "account"], registry=REGISTRY,
)  # fmt: skip
JOB_SECONDS = Durations("batchgate_job_duration_seconds", "How long a job ran, by action.", "action", LATENCY)
REGISTRY.register(JOB_SECONDS)
SUBMIT_TO_CALLBACK = Histogram(
    "batchgate_submit_to_callback_seconds", "From a batch's run to its callback accepted.",
    buckets=LONG, registry=REGISTRY,
)  # fmt: skip
DELIVERY_ATTEMPTS = Counter(
    "batchgate_delivery_attempts", "Callback attempts, by outcome: delivered, failed, gone (answered 410).",
    ["outcome"], registry=REGISTRY,
)  # fmt: skip
DELIVERY_SECONDS = Histogram(
    "batchgate_delivery_attempt_duration_seconds", "How long a callback attempt took, answered or not.",
    buckets=LATENCY, registry=REGISTRY,
)  # fmt: skip
DESTINATIONS_BACKED_OFF = Gauge(
    "batchgate_destinations_backed_off", "Callback destinations this process has backed off.",
    registry=REGISTRY,
)  # fmt: skip
HTTP_REQUESTS = Counter(
    "batchgate_http_requests", "API requests, by action and HTTP status.", ["action", "status"],
    registry=REGISTRY,
)  # fmt: skip
HTTP_SECONDS = Histogram(
    "batchgate_http_request_duration_seconds", "How long the API took to answer, by action.", ["action"],
    buckets=LATENCY, registry=REGISTRY,
)  # fmt: skip
STORE_SECONDS = Histogram(
    "batchgate_store_seconds",
    "How long the store took: SQLite's group commits; each PostgreSQL operation (a write is its commit).",
    ["operation"], buckets=LATENCY, registry=REGISTRY,
)  # fmt: skip
LOOP_LAG = Gauge(
    "batchgate_event_loop_lag_seconds",
    "How late this process's event loop runs its timers, on average (a worker takes no batch above 0.01).",
    registry=REGISTRY,
)  # fmt: skip
STORE_ERRORS = Counter(
    "batchgate_store_errors", "Times a loop of this process could not use the store, by loop.", ["loop"],
    registry=REGISTRY,
)  # fmt: skip
LEASES_HELD = Gauge("batchgate_leases_held", "Batches this worker holds a lease on.", registry=REGISTRY)
QUEUE_DEPTH = Gauge("batchgate_queue_depth", "Batches queued, not yet taken by a worker.", registry=REGISTRY)
RUNNING = Gauge("batchgate_batches_running", "Batches a worker is running.", registry=REGISTRY)
OLDEST_QUEUED = Gauge(
    "batchgate_oldest_queued_age_seconds", "How long the oldest queued batch has waited.", registry=REGISTRY
)
DELIVERIES_PENDING = Gauge(
    "batchgate_deliveries_pending", "Callbacks waiting to be sent (due or retrying).", registry=REGISTRY
)
DELIVERIES_FAILED = Gauge(
    "batchgate_deliveries_failed",
    "Callbacks whose tries ran out, or whose receiver said 410.",
    registry=REGISTRY,
)
WORKERS = Gauge("batchgate_workers_alive", "Worker processes heard from lately.", registry=REGISTRY)

OTHER = "other"
ANY_ACCOUNT = ""  # the account label's value unless the operator asks for accounts


def exposition() -> bytes:
    """The metrics, in Prometheus's text format."""
    return generate_latest(REGISTRY)


class AccountLabel:
    """The account a metric is labelled with: itself, or nothing (the default)."""

    by_account = False

    @classmethod
    def of(cls, account: str) -> str:
        return account if cls.by_account else ANY_ACCOUNT
