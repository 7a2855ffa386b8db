"""The Grafana dashboard, the Prometheus alert rules and OPERATIONS.md agree with the code.

Every PromQL expression may only use metrics the worker defines; the rules pass ``promtool check rules`` and
fire (or stay quiet) as documented under ``promtool test rules``; every alert has a runbook section; every
command the runbook names parses with ``python -m ops``'s own argparse. No YAML library: alerts.yml is read
with the small line reader below, cross-checked against promtool's rule count.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from ops.__main__ import parser as ops_parser

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "ops" / "grafana" / "callback-worker.json"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
OPERATIONS = ROOT / "OPERATIONS.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not on PATH (Debian: apt install prometheus)")

# The status writer's metrics, named by the dashboard and alerts ahead of their code (issue 5). Remove each
# from here once it is defined: test_pending_names_keep_their_promised_type then checks its type.
PENDING_METRICS = {
    "cbw_status_updates": "counter",  # status updates read from the Redis status stream
    "cbw_status_statements": "counter",  # SQL statements executed
    "cbw_status_flush_seconds": "histogram",  # one flush (batch write)
    "cbw_status_errors": "counter",  # writer errors
}
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}
EXPECTED_ALERTS = {
    "CallbackBacklogOld",
    "CallbackDeliveryStalled",
    "CallbackDeadLettersGrowing",
    "CallbackNoLeader",
    "CallbackTwoLeaders",
    "CallbackDeliveryErrorRatio",
    "CallbackStatusWriterFailing",
    "CallbackHostsSaturated",
    "CallbackCircuitOpen",
}
EXPECTED_ROWS = {
    "Throughput",
    "Latency",
    "Backlog and age",
    "Dead letters",
    "Leader",
    "Pacing",
    "Status writer",
    "Dramatiq",
}
SEVERITIES = {"critical", "warning", "info"}
RULE_KEYS = {"alert", "expr", "for", "severity", "summary", "description", "runbook_url"}
PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset"}
PROMQL_KEYWORDS |= {"bool", "inf", "nan", "atan2"}


# -- readers ------------------------------------------------------------------------------------------


def read_alert_rules(text: str) -> list[dict[str, str]]:
    """Each ``- alert:`` rule of alerts.yml as a flat dict of :data:`RULE_KEYS`.

    Just enough YAML for the file's own style (see its header): one ``key: value`` per line, plain or
    double-quoted values, ``|`` (lines kept) and ``>-`` (lines folded) blocks.
    """
    rules: list[dict[str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        match = re.match(r"^(\s*)(- )?([A-Za-z_]+):\s*(.*)$", line)
        if match is None or line.lstrip().startswith("#"):
            continue
        indent = len(match[1]) + (2 if match[2] else 0)
        key, value = match[3], match[4]
        if value in ("|", ">-"):
            block = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i].strip())
                i += 1
            value = "\n".join(block).strip() if value == "|" else " ".join(part for part in block if part)
        elif value.startswith('"'):
            value = json.loads(value)
        if key == "alert":
            rules.append({})
        if rules and key in RULE_KEYS:
            rules[-1][key] = value
    return rules


@cache
def alert_rules() -> list[dict[str, str]]:
    return read_alert_rules(ALERTS.read_text())


@cache
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict[str, Any]]:
    found = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return found


def dashboard_targets() -> list[tuple[str, str]]:
    """(``panel title / refId``, expr) of every query in the dashboard."""
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    ]


def all_expressions() -> list[tuple[str, str]]:
    return [(f"dashboard: {name}", expr) for name, expr in dashboard_targets()] + [
        (f"alert: {rule['alert']}", rule["expr"]) for rule in alert_rules()
    ]


@cache
def defined_metrics() -> dict[str, str]:
    """``{name: type}`` of every ``cbw_`` metric registered by importing the worker (``dramatiq worker.actors``).

    In a child process: importing ``worker.actors`` reads settings, builds the broker and sets the
    multiprocess directory, none of which belongs in the test process. Nothing connects to Redis.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLBACK_", "PROMETHEUS_MULTIPROC"))}
    env["CALLBACK_SIGNING_SECRET"] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cbw-metric-names-")
    code = (
        "import json, worker.actors, worker.metrics, worker.actors.metrics\n"
        "from prometheus_client import REGISTRY\n"
        "print(json.dumps({m.name: m.type for m in REGISTRY.collect() if m.name.startswith('cbw_')}))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        shutil.rmtree(env["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def sample_names(metrics: dict[str, str]) -> set[str]:
    """The series names Prometheus stores: counters with ``_total``, histograms as ``_bucket/_sum/_count``."""
    return {name + suffix for name, kind in metrics.items() for suffix in SUFFIXES[kind]}


def metric_names_in(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers left after removing strings, label matchers, ranges,
    label lists (``by (...)``, ``on (...)``, ...), function calls, keywords and numbers."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^{}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", text):
        is_call = text[match.end() :].lstrip().startswith("(")
        if not is_call and match[0].lower() not in PROMQL_KEYWORDS:
            names.add(match[0])
    return names


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def operations_anchors() -> set[str]:
    return {github_anchor(m[1]) for m in re.finditer(r"^#{1,6} +(.+)$", OPERATIONS.read_text(), re.MULTILINE)}


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


# -- the reader itself --------------------------------------------------------------------------------


def test_the_rule_reader_reads_blocks_quotes_and_plain_values():
    text = """groups:
  - name: g
    rules:
      - alert: A
        expr: |
          sum by (x) (m_total)
            > 1
        for: 5m
        labels:
          severity: info
        annotations:
          summary: "s {{ $labels.x }}"
          description: >-
            one
            two

      - alert: B
        expr: up == 0
"""
    assert read_alert_rules(text) == [
        {
            "alert": "A",
            "expr": "sum by (x) (m_total)\n> 1",
            "for": "5m",
            "severity": "info",
            "summary": "s {{ $labels.x }}",
            "description": "one two",
        },
        {"alert": "B", "expr": "up == 0"},
    ]


def test_the_metric_name_extractor_skips_labels_functions_and_keywords():
    expr = (
        'histogram_quantile(0.99, sum by (namespace, le) (rate(a_bucket{namespace=~"$namespace"}[$__rate_interval])))'
        " / on (namespace) group_left b unless c offset 5m > bool 1e3 and d{x='y'} or absent(e)"
    )
    assert metric_names_in(expr) == {"a_bucket", "b", "c", "d", "e"}


# -- the dashboard ------------------------------------------------------------------------------------


def test_the_dashboard_is_an_importable_grafana_dashboard():
    board = dashboard()
    assert board["schemaVersion"] >= 36
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    query = variables["namespace"]["query"]
    assert (query if isinstance(query, str) else query["query"]) == "label_values(cbw_leader, namespace)"
    assert variables["namespace"]["datasource"]["uid"] == "${DS_PROMETHEUS}"
    panels = dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert {p["title"] for p in panels if p["type"] == "row"} >= EXPECTED_ROWS
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]
            assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_dashboard_queries_on_namespaced_metrics_filter_by_the_namespace_variable():
    namespaced = {name: kind for name, kind in defined_metrics().items() if not name.startswith("cbw_dramatiq_")}
    namespaced_series = sample_names(namespaced) | sample_names(PENDING_METRICS)
    for where, expr in dashboard_targets():
        for name in metric_names_in(expr) & namespaced_series:
            if name == "cbw_leader" and "and on (instance, namespace, shard) (cbw_leader > 0)" in expr:
                continue  # the leader filter of the queue gauges: the left-hand side is filtered already
            assert re.search(rf'\b{name}\{{[^}}]*namespace=~"\$namespace"', expr), (where, name)


def test_the_dashboard_shows_every_metric_asked_for():
    used = set().union(*(metric_names_in(expr) for _, expr in dashboard_targets()))
    wanted = {
        "cbw_callbacks_delivered_total",
        "cbw_delivery_attempts_total",
        "cbw_delivery_latency_seconds_bucket",
        "cbw_delivery_duration_seconds_bucket",
        "cbw_stream_length",
        "cbw_consumer_lag",
        "cbw_stream_pending",
        "cbw_oldest_entry_age_seconds",
        "cbw_delayed_retries",
        "cbw_dead_letters",
        "cbw_callbacks_dead_total",
        "cbw_leader",
        "cbw_leader_epoch",
        "cbw_pacing_wait_seconds_total",
        "cbw_hosts_saturated",
        "cbw_host_circuits_open",
        "cbw_hosts_held",
        "cbw_in_flight",
        "cbw_callbacks_deferred_total",
        "cbw_status_updates_total",
        "cbw_status_statements_total",
        "cbw_status_flush_seconds_bucket",
        "cbw_status_errors_total",
        "cbw_dramatiq_messages_total",
        "cbw_dramatiq_message_errors_total",
        "cbw_dramatiq_messages_in_progress",
        "cbw_dramatiq_message_duration_seconds_bucket",
    }
    assert wanted - used == set()


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path):
    rules = []
    for n, (where, expr) in enumerate(dashboard_targets()):
        concrete = expr.replace("$namespace", ".+")
        concrete = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", concrete)
        assert "$" not in concrete, f"{where}: unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{n}", "expr": concrete})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- metric names -------------------------------------------------------------------------------------


def test_the_worker_defines_the_metrics_the_files_were_written_against():
    metrics = defined_metrics()
    assert metrics["cbw_leader"] == "gauge"
    assert metrics["cbw_delivery_attempts"] == "counter"
    assert metrics["cbw_delivery_latency_seconds"] == "histogram"
    assert metrics["cbw_dramatiq_messages"] == "counter"


def test_pending_names_keep_their_promised_type():
    for name, kind in PENDING_METRICS.items():
        if name in defined_metrics():
            assert defined_metrics()[name] == kind, f"{name} is now defined: drop it from PENDING_METRICS"


@pytest.mark.parametrize("where,expr", all_expressions(), ids=[where for where, _ in all_expressions()])
def test_every_expression_uses_only_metrics_that_exist(where, expr):
    known = sample_names(defined_metrics()) | sample_names(PENDING_METRICS)
    names = metric_names_in(expr)
    assert names, f"{where}: no metric found in {expr}"
    assert names - known == set(), f"{where}: unknown metric names"


# -- alert rules --------------------------------------------------------------------------------------


def test_every_alert_is_complete_and_has_a_runbook_section():
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    anchors = operations_anchors()
    for rule in rules:
        assert set(rule) == RULE_KEYS, (rule["alert"], RULE_KEYS - set(rule))
        assert rule["severity"] in SEVERITIES, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        path, _, anchor = rule["runbook_url"].partition("#")
        assert path == "OPERATIONS.md", rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in anchors, (rule["alert"], anchor)


def test_queue_gauges_are_taken_from_the_leader_of_their_own_shard():
    """A process leading shard 0 may keep a stale value of shard 1: every leader filter matches the shard too."""
    joins = 0
    for where, expr in all_expressions():
        for labels in re.findall(r"\bon\s*\(([^)]*)\)\s*\(cbw_leader > 0\)", expr):
            joins += 1
            assert {label.strip() for label in labels.split(",")} == {"instance", "namespace", "shard"}, where
        assert not re.search(r"\bby\s*\(\s*namespace\s*\)\s*\(cbw_leader\b", expr), f"{where}: count leaders per shard"
    assert joins >= 10


@needs_promtool
def test_promtool_accepts_the_rules_and_counts_as_many_as_the_reader():
    checked = promtool("check", "rules", str(ALERTS.relative_to(ROOT)))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    found = re.search(r"(\d+) rules found", checked.stdout)
    assert found is not None, checked.stdout
    assert int(found[1]) == len(alert_rules()), "the line reader missed a rule: keep alerts.yml in its style"


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    text = ", ".join(f'{key}="{value}"' for key, value in {"instance": "h1:9191", **labels}.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def fires(alert: str, at: str, *labels: dict[str, str]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": dict(lab)} for lab in labels]}


NS_A = {"namespace": "a"}
# The per-shard gauges carry `shard`; the counters only `namespace`. h1 is the default instance.
A0 = {"namespace": "a", "shard": "0"}
A1 = {"namespace": "a", "shard": "1"}
H2 = {"instance": "h2:9191"}
H3 = {"instance": "h3:9191"}
LEADS = series("cbw_leader", "1x40", **A0)  # h1 leads shard 0 of namespace a
H2_LEADS_1 = series("cbw_leader", "1x40", **A1, **H2)  # h2 leads shard 1
DELIVERING = series("cbw_delivery_attempts_total", "0+10x40", **NS_A, outcome="delivered", status_class="2xx")
NOT_DELIVERING = series("cbw_delivery_attempts_total", "7x40", **NS_A, outcome="delivered", status_class="2xx")
# (why, input series, expected alerts at eval times); one test case of `promtool test rules` each.
SCENARIOS: list[tuple[str, list[dict[str, str]], list[dict[str, Any]]]] = [
    (
        "backlog over 300 s for 5m on the instance leading the shard",
        [LEADS, series("cbw_oldest_entry_age_seconds", "400x40", **A0)],
        [
            fires("CallbackBacklogOld", "3m"),
            fires("CallbackBacklogOld", "10m", {**NS_A, "severity": "warning"}),
        ],
    ),
    (
        "an old age left behind by an instance that no longer leads the shard is ignored",
        [
            LEADS,
            series("cbw_oldest_entry_age_seconds", "10x40", **A0),
            series("cbw_leader", "0x40", **A0, **H2),
            series("cbw_oldest_entry_age_seconds", "900x40", **A0, **H2),
        ],
        [fires("CallbackBacklogOld", "20m")],
    ),
    (
        "a stale age of shard 1 on the process leading shard 0 is ignored: the join is per shard",
        [
            LEADS,
            series("cbw_oldest_entry_age_seconds", "10x40", **A0),
            series("cbw_leader", "0x40", **A1),
            series("cbw_oldest_entry_age_seconds", "900x40", **A1),
            H2_LEADS_1,
            series("cbw_oldest_entry_age_seconds", "10x40", **A1, **H2),
        ],
        [fires("CallbackBacklogOld", "20m")],
    ),
    (
        "one shard's old backlog, reported by the process leading that shard, is the namespace's",
        [
            LEADS,
            series("cbw_oldest_entry_age_seconds", "10x40", **A0),
            series("cbw_leader", "0x40", **A1),
            series("cbw_oldest_entry_age_seconds", "10x40", **A1),
            H2_LEADS_1,
            series("cbw_oldest_entry_age_seconds", "400x40", **A1, **H2),
        ],
        [fires("CallbackBacklogOld", "10m", {**NS_A, "severity": "warning"})],
    ),
    (
        "callbacks wait in shard 1 but no attempt in 10 minutes",
        [
            LEADS,
            series("cbw_stream_length", "0x40", **A0),
            H2_LEADS_1,
            series("cbw_stream_length", "5x40", **A1, **H2),
            NOT_DELIVERING,
        ],
        [fires("CallbackDeliveryStalled", "20m", {**NS_A, "severity": "critical"})],
    ),
    (
        "callbacks wait and attempts go on",
        [LEADS, series("cbw_stream_length", "5x40", **A0), DELIVERING],
        [fires("CallbackDeliveryStalled", "20m")],
    ),
    (
        "the only waiting callbacks are a stale length of shard 1 on the process leading shard 0",
        [
            LEADS,
            series("cbw_stream_length", "0x40", **A0),
            series("cbw_leader", "0x40", **A1),
            series("cbw_stream_length", "5x40", **A1),
            H2_LEADS_1,
            series("cbw_stream_length", "0x40", **A1, **H2),
            NOT_DELIVERING,
        ],
        [fires("CallbackDeliveryStalled", "20m")],
    ),
    (
        "a dead letter from the counter, then none for 15 minutes",
        [series("cbw_callbacks_dead_total", "0 0 0 1x40", **NS_A, reason="final")],
        [
            fires("CallbackDeadLettersGrowing", "5m", {**NS_A, "severity": "warning"}),
            fires("CallbackDeadLettersGrowing", "25m"),
        ],
    ),
    (
        "dead letters seen only in the stream length (ops recover moved poison entries)",
        [LEADS, series("cbw_dead_letters", "0 0 0 3x40", **A0)],
        [fires("CallbackDeadLettersGrowing", "5m", {**NS_A, "severity": "warning"})],
    ),
    (
        "new dead letters in shard 0 are not hidden by a replay of shard 1's",
        [
            LEADS,
            series("cbw_dead_letters", "0 0 0 3x40", **A0),
            H2_LEADS_1,
            series("cbw_dead_letters", "10 10 10 0x40", **A1, **H2),
        ],
        [fires("CallbackDeadLettersGrowing", "5m", {**NS_A, "severity": "warning"})],
    ),
    (
        "a worker that stopped leading shard 0 and nobody took over",
        [series("cbw_leader", "1 1 0x40", **A0)],
        [
            fires("CallbackNoLeader", "2m"),
            fires("CallbackNoLeader", "5m", {**A0, "severity": "critical"}),
        ],
    ),
    (
        "two shards: only shard 1 lost its leader, so only shard 1 alerts",
        [LEADS, series("cbw_leader", "1 1 0x40", **A1, **H2)],
        [
            fires("CallbackNoLeader", "5m", {**A1, "severity": "critical"}),
            fires("CallbackTwoLeaders", "5m"),
        ],
    ),
    (
        "the process leading shard 1 vanished from the scrapes (killed, or unreachable)",
        [
            LEADS,
            series("cbw_leader", "1x5 _x40", **A1, **H2),
            series("cbw_leader", "1x40", namespace="b", shard="0"),
        ],
        [fires("CallbackNoLeader", "20m", {**A1, "severity": "critical"})],
    ),
    (
        "every worker vanished: one alert per shard seen in the last day, none without a namespace",
        [series("cbw_leader", "1x5 _x40", **A0), series("cbw_leader", "1x5 _x40", **A1, **H2)],
        [fires("CallbackNoLeader", "20m", {**A0, "severity": "critical"}, {**A1, "severity": "critical"})],
    ),
    (
        "no cbw_leader series at all",
        [series("cbw_stream_length", "0x40", **A0)],
        [fires("CallbackNoLeader", "5m", {"severity": "critical"})],
    ),
    (
        "one of the two processes that led shard 0 is quiet",
        [LEADS, series("cbw_leader", "0x40", **A0, **H2)],
        [fires("CallbackNoLeader", "20m"), fires("CallbackTwoLeaders", "20m")],
    ),
    (
        "a leader in each of two shards, in two processes",
        [LEADS, H2_LEADS_1],
        [fires("CallbackNoLeader", "20m"), fires("CallbackTwoLeaders", "20m")],
    ),
    (
        "one process leads both shards",
        [LEADS, series("cbw_leader", "1x40", **A1)],
        [fires("CallbackNoLeader", "20m"), fires("CallbackTwoLeaders", "20m")],
    ),
    (
        "shard 1 handed over from h2 to h1; h2 stays alive and reports 0",
        [LEADS, series("cbw_leader", "1x10 0x30", **A1, **H2), series("cbw_leader", "_x10 1x30", **A1)],
        [fires("CallbackNoLeader", "20m"), fires("CallbackTwoLeaders", "20m")],
    ),
    (
        "the upgrade to shards: series without a shard label ended, the sharded ones lead",
        [series("cbw_leader", "1x5 _x40", **NS_A), series("cbw_leader", "_x5 1x40", **A0)],
        [fires("CallbackNoLeader", "20m")],
    ),
    (
        "workers from before shards (no shard label) vanished",
        [series("cbw_leader", "1x5 _x40", **NS_A), series("cbw_leader", "1x40", namespace="b", shard="0")],
        [fires("CallbackNoLeader", "20m", {**NS_A, "severity": "critical"})],
    ),
    (
        "two instances lead shard 0",
        [LEADS, series("cbw_leader", "1x40", **A0, **H2)],
        [fires("CallbackTwoLeaders", "1m"), fires("CallbackTwoLeaders", "5m", {**A0, "severity": "warning"})],
    ),
    (
        "two instances lead shard 1 while one leads shard 0: only shard 1 alerts",
        [LEADS, H2_LEADS_1, series("cbw_leader", "1x40", **A1, **H3)],
        [fires("CallbackTwoLeaders", "5m", {**A1, "severity": "warning"}), fires("CallbackNoLeader", "5m")],
    ),
    (
        "half the attempts fail at 1 attempt/s",
        [
            series("cbw_delivery_attempts_total", "0+30x40", namespace="a", outcome="delivered", status_class="2xx"),
            series("cbw_delivery_attempts_total", "0+30x40", namespace="a", outcome="retrying", status_class="5xx"),
        ],
        [fires("CallbackDeliveryErrorRatio", "20m", {**NS_A, "severity": "warning"})],
    ),
    (
        "half the attempts fail, but only 2 attempts a minute",
        [
            series("cbw_delivery_attempts_total", "0+1x40", namespace="a", outcome="delivered", status_class="2xx"),
            series("cbw_delivery_attempts_total", "0+1x40", namespace="a", outcome="dead", status_class="4xx"),
        ],
        [fires("CallbackDeliveryErrorRatio", "20m")],
    ),
    (
        "the status writer keeps failing",
        [series("cbw_status_errors_total", "0+6x40", namespace="a")],
        [fires("CallbackStatusWriterFailing", "10m", {**NS_A, "severity": "critical"})],
    ),
    (
        "one status writer error, then none",
        [series("cbw_status_errors_total", "0 0 1x40", namespace="a")],
        [fires("CallbackStatusWriterFailing", "10m")],
    ),
    (
        "the status writer reads updates but runs no statement",
        [
            series("cbw_status_updates_total", "0+100x40", namespace="a"),
            series("cbw_status_statements_total", "3x40", namespace="a"),
        ],
        [fires("CallbackStatusWriterFailing", "10m", {**NS_A, "severity": "critical"})],
    ),
    (
        "the status writer reads and writes",
        [
            series("cbw_status_updates_total", "0+100x40", namespace="a"),
            series("cbw_status_statements_total", "0+2x40", namespace="a"),
        ],
        [fires("CallbackStatusWriterFailing", "10m")],
    ),
    (
        "a host saturated for 15 minutes",
        [series("cbw_hosts_saturated", "2x40", namespace="a")],
        [
            fires("CallbackHostsSaturated", "10m"),
            fires("CallbackHostsSaturated", "20m", {**NS_A, "severity": "info"}),
        ],
    ),
    (
        "a host's circuit open for 15 minutes",
        [series("cbw_host_circuits_open", "1x40", **A0)],
        [
            fires("CallbackCircuitOpen", "5m"),
            fires("CallbackCircuitOpen", "15m", {**NS_A, "severity": "warning"}),
        ],
    ),
    (
        "open circuits in two shards led by two processes: one alert for the namespace",
        [series("cbw_host_circuits_open", "1x40", **A0), series("cbw_host_circuits_open", "2x40", **A1, **H2)],
        [fires("CallbackCircuitOpen", "15m", {**NS_A, "severity": "warning"})],
    ),
    (
        "a circuit open for 6 minutes while its receiver restarts, then closed",
        [series("cbw_host_circuits_open", "0 1x5 0x40", **A0)],
        [fires("CallbackCircuitOpen", "6m"), fires("CallbackCircuitOpen", "12m")],
    ),
]


@needs_promtool
def test_alerts_fire_as_the_runbook_says(tmp_path):
    """``promtool test rules`` on each scenario; annotations are left out (promtool compares them verbatim)."""
    rules = [
        {"alert": r["alert"], "expr": r["expr"], "for": r["for"], "labels": {"severity": r["severity"]}}
        for r in alert_rules()
    ]
    (tmp_path / "rules.yml").write_text(json.dumps({"groups": [{"name": "callback-worker", "rules": rules}]}))
    covered = {case["alertname"] for _, _, cases in SCENARIOS for case in cases}
    assert covered == EXPECTED_ALERTS
    tests = [
        {"name": why, "interval": "1m", "input_series": inputs, "alert_rule_test": cases}
        for why, inputs, cases in SCENARIOS
    ]
    (tmp_path / "tests.yml").write_text(
        json.dumps({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}, indent=1)
    )
    checked = promtool("test", "rules", "tests.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- the runbook --------------------------------------------------------------------------------------


def runbook_commands() -> list[str]:
    """The argument part of every ``python -m ops ...`` the runbook names (in code spans and blocks)."""
    text = OPERATIONS.read_text()
    return [m[1].strip() for m in re.finditer(r"python -m ops\b([^`#|;&)\n]*)", text)]


def test_every_ops_command_in_the_runbook_parses():
    commands = runbook_commands()
    named = {shlex.split(args)[0] for args in commands if args}
    assert named >= {"status", "recover", "unlock", "reset", "replay", "inspect"}
    for args in commands:
        if not args:
            continue  # the tool named in prose
        try:
            ops_parser().parse_args(shlex.split(args))
        except SystemExit:
            pytest.fail(f"OPERATIONS.md names `python -m ops {args}`, which python -m ops does not accept")


def test_every_make_target_in_the_runbook_exists():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    named = set(re.findall(r"`make ([\w-]+)", OPERATIONS.read_text()))
    assert named, "the runbook names no make target"
    assert named - targets == set()


def test_the_runbook_covers_every_alert_and_section():
    anchors = operations_anchors()
    assert {alert.lower() for alert in EXPECTED_ALERTS} <= anchors
    for section in ("reading ops status", "stopping a worker safely", "replaying dead letters safely", "metrics"):
        assert any(anchor.startswith(github_anchor(section)) for anchor in anchors), section


def test_the_runbook_links_resolve():
    text, anchors = OPERATIONS.read_text(), operations_anchors()
    for target in re.findall(r"\]\(([^)]+)\)", text):
        path, _, anchor = target.partition("#")
        if path:
            assert (ROOT / path).exists(), target
        else:
            assert anchor in anchors, target


def test_the_worker_storage_commands_in_the_runbook_exist():
    named = set(re.findall(r"python -m worker\.storage\s+(\w+)", OPERATIONS.read_text()))
    done = subprocess.run(
        [sys.executable, "-m", "worker.storage", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    offered = set(re.search(r"\{([\w,]+)\}", done.stdout)[1].split(","))
    assert named and named <= offered, (named, offered)
