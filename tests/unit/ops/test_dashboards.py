"""ops/grafana/dashboards/*.json: well-formed, wired to the provisioned data sources, and every
query one that works against what salesflow really exports.

PromQL: each expression (Grafana's interval variables replaced) must parse — it is written into
a rules file as a recording rule and `promtool check rules` must accept it — and select only
metrics that salesflow/instrumentation.py exports. SQL: read-only, and only the mart tables of
mart_builder/schema.py; tests/integration/test_dashboard_sql.py runs every query on MariaDB.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mart_builder.schema import DIMENSION_TABLES, MART_TABLES
from tests.unit.ops.promql import metric_names, replace_grafana_variables

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = ROOT / "ops" / "grafana" / "dashboards"
DATASOURCES = ROOT / "ops" / "grafana" / "provisioning" / "datasources" / "datasources.yml"

PIPELINE = "pipeline-health.json"
KPIS = "sales-kpis.json"
SQL_TABLES = set(MART_TABLES) | set(DIMENSION_TABLES)
#: the variables and macros the SQL may use (test_dashboard_sql.py knows how to replace each)
SQL_PLACEHOLDERS = {"$__timeFilter", "$__timeFrom", "$__timeTo", "$store"}


def load(name: str) -> dict:
    return json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))


def all_dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict) -> Iterator[dict]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def targets(board: dict) -> Iterator[tuple[dict, dict, dict]]:
    """(panel, target, data source) of every query of a dashboard."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield panel, target, target.get("datasource") or panel.get("datasource") or {}


def prometheus_exprs(board: dict) -> list[tuple[str, str]]:
    return [(f"{panel['title']} / {t['refId']}", t["expr"])
            for panel, t, ds in targets(board) if ds.get("type") == "prometheus"]


def sql_queries(board: dict) -> list[tuple[str, str]]:
    return [(f"{panel['title']} / {t['refId']}", t["rawSql"])
            for panel, t, ds in targets(board) if ds.get("type") == "mysql"]


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict]:
    config = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    return {ds["uid"]: ds for ds in config["datasources"]}


# --- structure -------------------------------------------------------------------------------


def test_both_dashboards_exist() -> None:
    boards = all_dashboards()
    assert {PIPELINE, KPIS} <= set(boards), sorted(boards)
    uids = [b["uid"] for b in boards.values()]
    assert len(uids) == len(set(uids)), uids
    for name, board in boards.items():
        assert board.get("title") and board.get("schemaVersion"), name
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), f"{name}: repeated panel ids"
        titles = [p["title"] for p in panels(board) if p["type"] != "row"]
        assert len(titles) == len(set(titles)), f"{name}: repeated panel titles"
        for panel in panels(board):
            assert {"h", "w", "x", "y"} <= set(panel.get("gridPos", {})), panel.get("title")
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel.get("title")


def test_queries_use_the_provisioned_data_sources(datasources: dict[str, dict]) -> None:
    for name, board in all_dashboards().items():
        found = 0
        for panel, target, ds in targets(board):
            found += 1
            where = f"{name}: {panel['title']} / {target.get('refId')}"
            assert ds.get("uid") in datasources, f"{where}: unknown data source {ds}"
            assert ds.get("type") == datasources[ds["uid"]]["type"], where
        assert found, f"{name} has no queries"
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                assert variable["datasource"]["uid"] in datasources, variable["name"]


def test_pipeline_dashboard_is_prometheus_and_kpis_are_sql() -> None:
    assert prometheus_exprs(load(PIPELINE)) and not sql_queries(load(PIPELINE))
    assert sql_queries(load(KPIS)) and not prometheus_exprs(load(KPIS))


# --- PromQL ----------------------------------------------------------------------------------


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.95, sum by (le) (rate(a_seconds_bucket{job="x",le!="1e9"}'
            '[$__rate_interval]))) / on (job) group_left (mart) b_total offset 5m '
            'and time() - max(c{reason=~"sum|by"}) > 1e3 or vector(0) unless up == bool 1')
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c", "up"}
    assert metric_names('sum(rate({__name__="d_total"}[5m]))') == {"d_total"}
    assert replace_grafana_variables("x[$__rate_interval] y[$__range]") == "x[1m] y[1h]"


def test_every_prometheus_query_parses(promtool: str, tmp_path: Path) -> None:
    rules = []
    for name, board in all_dashboards().items():
        for number, (where, expr) in enumerate(prometheus_exprs(board)):
            plain = replace_grafana_variables(expr)
            assert "$" not in plain, f"{name}: {where}: unreplaced variable in {expr}"
            rules.append({"record": f"dashboard:{Path(name).stem.replace('-', '_')}:{number}",
                          "expr": plain})
    assert rules
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}),
                    encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_query_is_caught(promtool: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"record": "dashboard:broken", "expr": "sum(rate(foo[5m])"}]}]}), encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0


def test_prometheus_queries_use_only_exported_metrics(exported_metrics: set[str]) -> None:
    for name, board in all_dashboards().items():
        for where, expr in prometheus_exprs(board):
            used = metric_names(expr)
            assert used, f"{name}: {where}: no metric in {expr}"
            assert used <= exported_metrics, (
                f"{name}: {where} uses {sorted(used - exported_metrics)}, which salesflow "
                "does not export")


def test_pipeline_dashboard_covers_the_pipeline() -> None:
    exprs = [expr for _, expr in prometheus_exprs(load(PIPELINE))]

    def uses(pattern: str) -> bool:
        return any(re.search(pattern, e) for e in exprs)

    required = {
        "records in": r"salesflow_stream_records_in_total",
        "accepted": r"salesflow_stream_accepted_total",
        "dead letters by reason": r"by \(reason\) \(rate\(salesflow_stream_dead_lettered_total",
        "exact replays": r"salesflow_stream_exact_replays_total",
        "lag per partition": r"by \([^)]*partition[^)]*\) \(salesflow_consumer_lag_messages",
        "flush duration quantiles":
            r"histogram_quantile\([^,]+, .*salesflow_mart_flush_duration_seconds_bucket",
        "last flush age": r"time\(\) - .*salesflow_mart_last_success_timestamp_seconds",
        "retries by dependency": r"by \(dependency\) .*salesflow_dependency_retries_total",
        "failures by dependency": r"by \(dependency\) .*salesflow_dependency_failures_total",
        "worker up": r"salesflow_stream_worker_up",
        "scrape up": r'up\{job="salesflow-stream"\}',
        "transaction latency":
            r"histogram_quantile\(.*salesflow_stream_transaction_seconds_bucket",
    }
    missing = [what for what, pattern in required.items() if not uses(pattern)]
    assert not missing, missing


# --- SQL -------------------------------------------------------------------------------------


def _cte_names(sql: str) -> set[str]:
    return set(re.findall(r"(?i)(?:\bWITH|,)\s*(\w+)\s+AS\s*\(", sql))


def test_sql_is_read_only_and_uses_only_mart_tables() -> None:
    queries = sql_queries(load(KPIS))
    queries += [(f"variable {v['name']}", v["query"])
                for v in load(KPIS).get("templating", {}).get("list", [])
                if v.get("type") == "query"]
    for where, sql in queries:
        assert re.match(r"(?is)^\s*(SELECT|WITH)\b", sql), f"{where}: not a SELECT"
        assert ";" not in sql, f"{where}: one statement only"
        forbidden = r"(?i)\b(INSERT|UPDATE|DELETE|REPLACE|DROP|ALTER|CREATE|GRANT|TRUNCATE)\b"
        assert not re.search(forbidden, sql), where
        tables = set(re.findall(r"(?i)\b(?:FROM|JOIN)\s+`?(\w+)", sql)) - _cte_names(sql)
        assert tables, f"{where}: reads no table"
        assert tables <= SQL_TABLES, f"{where}: reads {sorted(tables - SQL_TABLES)}"
        placeholders = set(re.findall(r"\$\{?(\w+)", sql))
        assert {f"${p}" for p in placeholders} <= SQL_PLACEHOLDERS, (where, placeholders)
        # Grafana's SQL macros read their arguments up to the first `)`: no nested calls.
        for argument in re.findall(r"\$__\w+\(([^)]*)\)", sql):
            assert "(" not in argument, f"{where}: nested call in a macro: {argument}"
        assert not re.search(r"\$__\w+\([^)]*\(", sql), f"{where}: nested call in a macro"


def test_kpi_dashboard_covers_the_kpis() -> None:
    text = "\n".join(sql for _, sql in sql_queries(load(KPIS)))
    for needle in ("customer_lifetime_value", "customer_segment", "inactive_status",
                   "sales_growth_rate", "incentive", "sales_team_data_mart",
                   "customers_data_mart", "sales_person_id", "store_id"):
        assert needle in text, needle


def test_kpi_dashboard_shows_the_anomaly_flags() -> None:
    """anomalies.md: a panel of flags over time by rule, and the latest flags."""
    by_title = {panel["title"]: panel for panel in panels(load(KPIS))}
    flags = by_title["Anomaly flags"]
    assert flags["type"] == "timeseries"
    (target,) = flags["targets"]
    sql = " ".join(target["rawSql"].split())
    assert target["format"] == "time_series"
    assert "FROM sales_anomalies" in sql and "$__timeFilter(first_flagged_at)" in sql
    assert "rule AS metric" in sql and "COUNT(*)" in sql and "GROUP BY time, rule" in sql
    latest = by_title["Latest anomaly flags"]
    assert latest["type"] == "table"
    (target,) = latest["targets"]
    sql = " ".join(target["rawSql"].split())
    assert "ORDER BY first_flagged_at DESC" in sql and "LIMIT" in sql
    for column in ("rule", "entity", "period", "observed", "expected"):
        assert column in sql, column

