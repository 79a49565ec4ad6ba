"""docs/grafana: the sample dashboard and alert rules ask only for series batchgate exposes.

Every metric name in every PromQL expression must be a sample name of batchgate's registry (a
counter's `_total`, a histogram's `_bucket`/`_count`/`_sum`, a gauge's own name), every label in a
matcher or a `by (...)` must be one of that metric's labels (or a scrape target's `job`/`instance`,
or a bucket's `le`), label values of enumerated labels must be values batchgate writes, counters are
only read through rate()/increase(), and histogram_quantile() gets buckets summed by `le`. Both files
must also be what Grafana and Prometheus load: unique panel ids, a datasource variable, and alerts
with `for`, a severity, a summary and a description. promtool, when installed, checks the rules too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML, installed with uvicorn[standard]
from prometheus_client.metrics import MetricWrapperBase

from batchgate import metrics
from batchgate.models import BatchStatus, DeliveryStatus, JobOutcome

DOCS = Path(__file__).resolve().parents[2] / "docs" / "grafana"
DASHBOARD = DOCS / "batchgate-dashboard.json"
ALERTS = DOCS / "alerts.yml"

TARGET_LABELS = frozenset({"job", "instance"})  # added by Prometheus to every scraped series
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")  # only meaningful as a rate or an increase
RANGE_COUNTER_FUNCTIONS = frozenset({"rate", "irate", "increase", "resets"})
GRAFANA_BUILTINS = frozenset({"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"})
SEVERITIES = frozenset({"critical", "warning", "info"})

# the values batchgate writes into its enumerated labels (events.py)
LABEL_VALUES = {
    ("batchgate_batches", "event"): {"submitted"} | {s.value for s in BatchStatus if s.finished},
    ("batchgate_jobs", "outcome"): {o.value for o in JobOutcome},
    ("batchgate_delivery_attempts", "outcome"): {s.value for s in DeliveryStatus} - {"pending"},
}
# what the issue asks an operator to see: the dashboard must show each
ON_THE_DASHBOARD = {
    "batchgate_batches", "batchgate_jobs", "batchgate_job_duration_seconds", "batchgate_queue_depth",
    "batchgate_oldest_queued_age_seconds", "batchgate_submit_to_callback_seconds",
    "batchgate_delivery_attempts", "batchgate_destinations_backed_off", "batchgate_http_requests",
    "batchgate_http_request_duration_seconds", "batchgate_store_seconds", "batchgate_leases_held",
    "batchgate_batches_running", "batchgate_deliveries_pending", "batchgate_deliveries_failed",
    "batchgate_workers_alive",
}  # fmt: skip

METRIC = re.compile(r"\b((?:batchgate|process|python)_[a-z0-9_]+|up)\b(?!\s*\()")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING = re.compile(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
VARIABLE = re.compile(r"\$\{?(\w+)")
PLAIN_ALTERNATIVES = re.compile(r"[a-z0-9_.]+(\|[a-z0-9_.]+)*")


@dataclass(frozen=True)
class Series:
    family: str
    type: str
    labels: frozenset[str]


def exposed() -> dict[str, Series]:
    """Each sample name batchgate's registry can expose, with its family, type and labels.

    A labelled metric with no child yet has no samples: its names come from its family's name and
    type, its labels from the metric object itself."""
    declared = {
        next(iter(wrapper.describe())).name: frozenset(wrapper._labelnames)
        for wrapper in vars(metrics).values()
        if isinstance(wrapper, MetricWrapperBase)
    }
    declared |= {
        durations.name: frozenset({durations.label})
        for durations in vars(metrics).values()
        if isinstance(durations, metrics.Durations)
    }
    series: dict[str, Series] = {}
    for family in metrics.REGISTRY.collect():
        labels = set(declared.get(family.name, ()))
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        names = {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
        for name in names:
            extra = {"le"} if name.endswith("_bucket") else set()
            series[name] = Series(family.name, family.type, frozenset(labels | extra))
    return series


SERIES = exposed()
SERIES["up"] = Series("up", "gauge", frozenset())


def masked(expr: str) -> str:
    """The expression with its strings blanked (same length), so parentheses in them do not count."""
    return STRING.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', expr)


def closing(text: str, opening: int) -> int:
    depth = 0
    for i in range(opening, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def opening(text: str, closed: int) -> int:
    depth = 0
    for i in range(closed, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def enclosing_function(text: str, position: int) -> str:
    """The name of the call whose parentheses hold `position` ('' when none does)."""
    depth = 0
    for i in range(position, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth < 0:
            found = re.search(r"([a-z_]+)\s*$", text[:i])
            return found.group(1) if found else ""
    return ""


def metrics_in(text: str) -> list[str]:
    return [m.group(1) for m in METRIC.finditer(text)]


def problems(expr: str) -> Iterator[str]:
    """What is wrong with one PromQL expression, against the metrics batchgate exposes."""
    text = masked(expr)
    assert text.count("(") == text.count(")"), f"unbalanced parentheses: {expr}"
    assert text.count("{") == text.count("}"), f"unbalanced braces: {expr}"
    found = metrics_in(text)
    if not found:
        yield f"no metric in {expr!r}"
    for m in METRIC.finditer(text):
        name = m.group(1)
        if name not in SERIES:
            yield f"{name} is not a series batchgate exposes"
            continue
        series, rest = SERIES[name], text[m.end() :]
        selector = re.match(r"\s*\{([^}]*)\}", rest)
        if selector:
            original = expr[m.end() + selector.start(1) : m.end() + selector.end(1)]
            for label, op, value in MATCHER.findall(original):
                if name != "up" and label not in series.labels | TARGET_LABELS:
                    yield f"{name} has no label {label!r} (it has {sorted(series.labels)})"
                known = LABEL_VALUES.get((series.family, label))
                plain = op in ("=", "!=") or PLAIN_ALTERNATIVES.fullmatch(value)
                if known is not None and plain and not set(value.split("|")) <= known:
                    yield f"{name}{{{label}{op}{value!r}}}: {label} is one of {sorted(known)}"
            rest = rest[selector.end() :]
        ranged = rest.lstrip().startswith("[")
        function = enclosing_function(text, m.start())
        if name.endswith(COUNTER_SUFFIXES) and not (ranged and function in RANGE_COUNTER_FUNCTIONS):
            yield f"{name} is a counter: read it through rate() or increase(), not {function or 'as is'}"
        if series.type == "gauge" and ranged and function in RANGE_COUNTER_FUNCTIONS:
            yield f"{name} is a gauge: {function}() of it means nothing (use delta() or deriv())"
    for g in GROUPING.finditer(text):
        keyword, labels = g.group(1), [x.strip() for x in g.group(2).split(",") if x.strip()]
        if keyword in ("by", "without"):
            after = text[g.end() :].lstrip()
            if after.startswith("("):
                start = g.end() + (len(text[g.end() :]) - len(after))
                scope = text[start : closing(text, start) + 1]
            else:  # sum (x) by (y)
                before = text[: g.start()].rstrip()
                scope = text[opening(text, len(before) - 1) : len(before)]
        else:  # on/ignoring: both sides
            scope = text
        for name in set(metrics_in(scope)) & set(SERIES) - {"up"}:
            missing = set(labels) - SERIES[name].labels - TARGET_LABELS
            if missing:
                yield f"{keyword} ({', '.join(labels)}) over {name}, which has no {sorted(missing)}"
    for q in re.finditer(r"\bhistogram_quantile\s*\(", text):
        argument = text[q.end() - 1 : closing(text, q.end() - 1) + 1]
        names = set(metrics_in(argument))
        if not names or not all(name.endswith("_bucket") for name in names):
            yield f"histogram_quantile() of something else than buckets: {expr}"
        for g in GROUPING.finditer(argument):
            grouped = {x.strip() for x in g.group(2).split(",")}
            if (g.group(1) == "by") != ("le" in grouped):
                yield f"histogram_quantile() needs the buckets summed by le: {expr}"


# the dashboard --------------------------------------------------------------------------------------
def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    dashboard = load_dashboard()
    exprs = [
        (f"panel {panel['id']} {panel['title']!r}", target["expr"])
        for panel in all_panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert found, f"variable {variable['name']}: {query}"
            exprs.append((f"variable {variable['name']}", found.group(1)))
            assert found.group(2) in TARGET_LABELS | SERIES[metrics_in(found.group(1))[0]].labels
    return exprs


@pytest.mark.parametrize(("where", "expr"), dashboard_exprs())
def test_each_dashboard_query_asks_for_what_batchgate_exposes(where: str, expr: str) -> None:
    assert list(problems(expr)) == [], where


def test_the_dashboard_shows_what_an_operator_needs() -> None:
    shown = {SERIES[name].family for _, expr in dashboard_exprs() for name in metrics_in(masked(expr))}
    assert ON_THE_DASHBOARD - shown == set()


def test_the_dashboard_loads_in_grafana() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    panels = list(all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == datasource, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", datasource) == datasource, panel["title"]
            assert target["refId"]
            used = set(VARIABLE.findall(target["expr"])) - GRAFANA_BUILTINS
            assert used <= set(variables), f"{panel['title']}: undefined variables {used - set(variables)}"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == datasource, variable["name"]


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in load_dashboard()["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


# the alert rules ------------------------------------------------------------------------------------
def load_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    assert len({group["name"] for group in groups}) == len(groups), "group names must be unique"
    return [rule for group in groups for rule in group["rules"]]


@pytest.mark.parametrize("rule", load_rules(), ids=lambda rule: rule.get("alert", "?"))
def test_each_alert_is_complete_and_asks_for_what_batchgate_exposes(rule: dict[str, Any]) -> None:
    assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
    assert re.fullmatch(r"Batchgate[A-Za-z0-9]+", rule["alert"])
    assert re.fullmatch(r"\d+[smh]", rule["for"])
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"].strip()
    assert rule["annotations"]["description"].strip()
    assert list(problems(rule["expr"])) == []


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in load_rules()]
    assert len(names) == len(set(names))


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# the checker itself ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ("rate(batchgate_jobs_finished_total[5m])", "not a series"),
        ("batchgate_jobs", "not a series"),  # a counter's family name is not a series
        ('sum(rate(batchgate_jobs_total{status="failed"}[5m]))', "no label 'status'"),
        ('sum(rate(batchgate_jobs_total{outcome="error"}[5m]))', "outcome is one of"),
        ("sum by (webhook) (rate(batchgate_jobs_total[5m]))", "which has no ['webhook']"),
        ("sum(rate(batchgate_delivery_attempts_total[5m])) by (status)", "which has no ['status']"),
        ("sum(batchgate_http_requests_total)", "is a counter"),
        ("rate(batchgate_queue_depth[5m])", "is a gauge"),
        ("histogram_quantile(0.9, sum by (action) (rate(batchgate_job_duration_seconds_bucket[5m])))",
         "summed by le"),
        ("histogram_quantile(0.9, rate(batchgate_job_duration_seconds_sum[5m]))", "else than buckets"),
    ],
)  # fmt: skip
def test_the_checker_finds_mistakes(expr: str, complaint: str) -> None:
    assert any(complaint in problem for problem in problems(expr)), list(problems(expr))
