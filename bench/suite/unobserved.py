"""`batchgate` with its metrics turned into no-ops: BG-S0, the baseline that shows what
observability costs (issue 11: the noop burst and `run` within 10 % of it).

batchgate has no switch to stop counting (an operator who scrapes nothing pays for counters all
the same), so this entry point makes every prometheus_client update do nothing before it runs the
installed command: `labels()` answers the metric itself, and `inc`, `dec`, `set`, `observe` and
batchgate's own `Durations.observe_many` return at once. Run as
`python -m bench.suite.unobserved serve ...`, with the same arguments as `batchgate`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import metrics

from batchgate import metrics as batchgate_metrics


def _nothing(self: Any, *args: Any, **kwargs: Any) -> None:
    return None


def _itself(self: Any, *args: Any, **kwargs: Any) -> Any:
    return self


def silence() -> None:
    """Every metric update of this process, from now on, does nothing."""
    metrics.MetricWrapperBase.labels = _itself  # type: ignore[method-assign]
    for cls, names in (
        (metrics.Counter, ("inc",)),
        (metrics.Gauge, ("inc", "dec", "set")),
        (metrics.Histogram, ("observe",)),
    ):
        for name in names:
            setattr(cls, name, _nothing)
    batchgate_metrics.Durations.observe_many = _nothing  # type: ignore[method-assign]


if __name__ == "__main__":
    silence()
    from batchgate.cli import main

    main(prog_name="batchgate")
