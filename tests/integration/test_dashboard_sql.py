"""Every SQL query of the Grafana dashboards, run on the real MariaDB marts.

The marts are created with `migrate()` and filled with the worked examples (tests/data), the
rows the metric math makes from them, written by `MartWriter`, and the anomaly flags of
tests/anomaly_flags.py. Each query runs with Grafana's
macros and the `$store` variable replaced the way Grafana does it (for "All": every value of
the variable's own query, quoted), under MySQL 8's default sql_mode (ONLY_FULL_GROUP_BY
included: the compose stack runs MySQL 8.4), must return rows, and the KPI figures must agree
with the expected marts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mart_builder.db import make_engine
from mart_builder.metrics import MartRules, aggregate, customer_rows, data_as_of, team_rows
from mart_builder.schema import DIMENSION_TABLES, MART_TABLES, migrate
from mart_builder.writer import MartWriter
from salesflow.settings import Settings
from tests.anomaly_flags import BY_DAY_AND_RULE, FLAGS, insert_flags
from tests.marts_expected import (
    load_customers,
    load_expected_customers,
    load_expected_team,
    load_sales_people,
    load_valid_sales,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "ops" / "grafana" / "dashboards"
# MySQL 8's default: stricter GROUP BY than MariaDB's default, so a query passing here runs on both.
MYSQL8_SQL_MODE = ("ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
                   "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION")
# A dashboard time range that holds every example month: 2000-01-01 .. 2037-12-31 UTC (MariaDB
# before 11.5 returns NULL from FROM_UNIXTIME past 2038-01-19).
TIME_FROM, TIME_TO = 946684800, 2145830400


def _sql_targets() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        stack = list(board.get("panels", []))
        while stack:
            panel = stack.pop(0)
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                ds = target.get("datasource") or panel.get("datasource") or {}
                if ds.get("type") == "mysql":
                    found.append((f"{path.stem}: {panel['title']} / {target['refId']}", target))
    return found


def _variables() -> dict[str, str]:
    """Template variable name -> its SQL query (the KPI dashboard's `store`)."""
    out = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") == "query" and variable["datasource"]["type"] == "mysql":
                query = variable["query"]
                out[variable["name"]] = query if isinstance(query, str) else query["rawSql"]
    return out


SQL_TARGETS = _sql_targets()


def replace_time_filter(sql: str, start: int = TIME_FROM, end: int = TIME_TO) -> str:
    """`$__timeFilter(expr)` -> `expr BETWEEN FROM_UNIXTIME(from) AND FROM_UNIXTIME(to)`, the
    way Grafana's MySQL data source expands it: its argument ends at the first `)`."""
    return re.sub(r"\$__timeFilter\(([^)]*)\)",
                  lambda m: f"{m[1]} BETWEEN FROM_UNIXTIME({start}) AND FROM_UNIXTIME({end})",
                  sql)


def grafana_sql(sql: str, variables: dict[str, list[Any]], start: int = TIME_FROM,
                end: int = TIME_TO) -> str:
    """The statement Grafana sends: macros expanded, multi-value variables as 'a','b'."""
    sql = replace_time_filter(sql, start, end)
    sql = sql.replace("$__timeFrom()", f"FROM_UNIXTIME({start})")
    sql = sql.replace("$__timeTo()", f"FROM_UNIXTIME({end})")
    for name, values in variables.items():
        quoted = ",".join("'" + str(v).replace("'", "''") + "'" for v in values)
        sql = re.sub(r"\$\{" + name + r"(?::\w+)?\}|\$" + name + r"\b", quoted, sql)
    assert "$" not in sql, f"unreplaced macro or variable in:\n{sql}"
    return sql


def test_macro_replacement() -> None:
    sql = grafana_sql("SELECT 1 FROM t WHERE $__timeFilter(d) AND m BETWEEN "
                      "DATE_FORMAT($__timeFrom(), '%Y-%m') AND $__timeTo() "
                      "AND s IN ($store) AND u IN (${store})", {"store": [1, 2]})
    assert sql == (f"SELECT 1 FROM t WHERE d BETWEEN FROM_UNIXTIME({TIME_FROM}) AND "
                   f"FROM_UNIXTIME({TIME_TO}) AND m BETWEEN DATE_FORMAT(FROM_UNIXTIME("
                   f"{TIME_FROM}), '%Y-%m') AND FROM_UNIXTIME({TIME_TO}) "
                   "AND s IN ('1','2') AND u IN ('1','2')")


@pytest.fixture(scope="module")
def engine(mysql_url: str) -> Iterator[sa.Engine]:
    """The session's MariaDB database with the marts of the worked examples, and nothing else."""
    settings = Settings(_env_file=None, mart_db_url=mysql_url)  # type: ignore[call-arg]
    engine = make_engine(settings)
    migrate(engine)
    with engine.begin() as conn:
        for table in [*MART_TABLES.values(), *DIMENSION_TABLES.values()]:
            conn.execute(table.delete())
    caggs, taggs = aggregate(load_valid_sales())
    rules = MartRules()
    customers = customer_rows(caggs.values(), load_customers(), rules, data_as_of(caggs.values()))
    team = team_rows(taggs.values(), load_sales_people(), rules)
    stats = MartWriter(engine).write(customers, team)
    assert stats.customers == len(load_expected_customers())
    assert stats.team == len(load_expected_team())
    insert_flags(engine)
    yield engine
    engine.dispose()


def run(engine: sa.Engine, sql: str) -> tuple[list[str], list[tuple]]:
    """Run one statement as Grafana sends it: verbatim (no parameters, so `%` is literal)."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"SET SESSION sql_mode = '{MYSQL8_SQL_MODE}'")
        cursor.execute(sql)
        columns = [d[0] for d in cursor.description]
        rows = [tuple(row) for row in cursor.fetchall()]
        cursor.close()
        return columns, rows
    finally:
        raw.close()


@pytest.fixture(scope="module")
def variables(engine: sa.Engine) -> dict[str, list[Any]]:
    """Each template variable's values, from its own query: what "All" selects in Grafana."""
    values = {}
    for name, query in _variables().items():
        _, rows = run(engine, query)
        assert rows, f"variable {name} has no values"
        values[name] = [row[0] for row in rows]
    return values


def test_there_are_sql_panels() -> None:
    assert len(SQL_TARGETS) >= 8, [name for name, _ in SQL_TARGETS]


@pytest.mark.parametrize("target", [t for _, t in SQL_TARGETS], ids=[n for n, _ in SQL_TARGETS])
def test_query_runs_on_the_marts(engine: sa.Engine, variables: dict[str, list[Any]],
                                 target: dict) -> None:
    columns, rows = run(engine, grafana_sql(target["rawSql"], variables))
    assert rows, "no rows from the worked examples"
    assert all(value is not None for value in rows[0][:1]), rows[0]
    if target.get("format") == "time_series":
        assert "time" in columns, columns
        times = [row[columns.index("time")] for row in rows]
        assert all(isinstance(t, date | datetime) for t in times), times[:3]
        assert times == sorted(times), "Grafana needs time series sorted by time"
        value_columns = [c for c in columns if c not in ("time", "metric")]
        assert value_columns, columns


# --- the figures against the expected marts -----------------------------------------------------


def _query(title: str) -> str:
    matches = [t["rawSql"] for name, t in SQL_TARGETS if name.split(": ", 1)[1].rsplit(
        " / ", 1)[0] == title]
    assert len(matches) == 1, (title, [name for name, _ in SQL_TARGETS])
    return matches[0]


def _one(engine: sa.Engine, variables: dict, title: str) -> Any:
    _, rows = run(engine, grafana_sql(_query(title), variables))
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return rows[0][0]


def test_customer_figures(engine: sa.Engine, variables: dict) -> None:
    expected = load_expected_customers()
    ltv = {int(r["customer_id"]): Decimal(r["customer_lifetime_value"]) for r in expected}
    inactive = {int(r["customer_id"]) for r in expected if r["inactive_status"] == "true"}
    assert _one(engine, variables, "Customers") == len(ltv)
    assert _one(engine, variables, "Inactive customers") == len(inactive) > 0
    assert _one(engine, variables, "Customer lifetime value, all customers") == sum(ltv.values())

    segments = {}
    for r in expected:
        segments[int(r["customer_id"])] = r["customer_segment"]
    _, rows = run(engine, grafana_sql(_query("Customer segments"), variables))
    assert {segment: count for segment, count in rows} == {
        s: list(segments.values()).count(s) for s in set(segments.values())}

    columns, rows = run(engine, grafana_sql(_query("Top customers by lifetime value"),
                                            variables))
    top = sorted(ltv.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    got = [(row[columns.index("customer_id")], row[columns.index("lifetime_value")])
           for row in rows]
    assert got == top

    columns, rows = run(engine, grafana_sql(_query("Inactive customers, most valuable first"),
                                            variables))
    assert {row[columns.index("customer_id")] for row in rows} == inactive


def test_team_figures(engine: sa.Engine, variables: dict) -> None:
    expected = load_expected_team()
    latest = max(r["sales_month"] for r in expected)
    incentives = sum(Decimal(r["incentive"]) for r in expected if r["sales_month"] == latest)
    assert incentives > 0
    assert _one(engine, variables, "Incentives, latest month") == incentives

    columns, rows = run(engine, grafana_sql(_query("Incentives of the latest month"),
                                            variables))
    assert {(row[columns.index("store_id")], row[columns.index("sales_person_id")])
            for row in rows} == {
        (int(r["store_id"]), int(r["sales_person_id"])) for r in expected
        if r["sales_month"] == latest and Decimal(r["incentive"]) > 0}

    columns, rows = run(engine, grafana_sql(_query("Sales per store per month"), variables))
    per_store: dict[tuple[str, str], Decimal] = {}
    for r in expected:
        key = (r["sales_month"], f"store {r['store_id']}")
        per_store[key] = per_store.get(key, Decimal(0)) + Decimal(r["total_sales"])
    got = {(row[columns.index("time")].strftime("%Y-%m"), row[columns.index("metric")]):
           row[columns.index("total_sales")] for row in rows}
    assert got == per_store

    columns, rows = run(engine, grafana_sql(_query("Sales growth per store, month over month"),
                                            variables))
    for row in rows:
        month = row[columns.index("time")]
        store = row[columns.index("metric")]
        prev = date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)
        now_total = per_store[(month.strftime("%Y-%m"), store)]
        prev_total = per_store[(prev.strftime("%Y-%m"), store)]
        growth = ((now_total - prev_total) / prev_total * 100).quantize(Decimal("0.01"))
        assert row[columns.index("growth_pct")] == growth, (month, store)

    columns, rows = run(engine, grafana_sql(_query("Growth of each salesperson, latest month"),
                                            variables))
    assert len(rows) == sum(1 for r in expected if r["sales_month"] == latest)

    columns, rows = run(engine, grafana_sql(_query("Sales per salesperson per month"),
                                            variables))
    assert len(rows) == len(expected)


def test_store_filter_narrows_the_queries(engine: sa.Engine, variables: dict) -> None:
    first = variables["store"][:1]
    columns, rows = run(engine, grafana_sql(_query("Sales per salesperson per month"),
                                            {"store": first}))
    assert rows and {row[columns.index("store_id")] for row in rows} == set(first)


def test_time_range_narrows_the_queries(engine: sa.Engine, variables: dict) -> None:
    """A dashboard range of 2025-06-15 .. 2025-08-10 shows the months 2025-06 .. 2025-08."""
    start, end = 1749945600, 1754784000  # 2025-06-15 00:00, 2025-08-10 00:00 UTC
    wanted = {"2025-06", "2025-07", "2025-08"}
    columns, rows = run(engine, grafana_sql(_query("Sales per salesperson per month"),
                                            variables, start, end))
    assert {row[columns.index("sales_month")] for row in rows} == wanted
    columns, rows = run(engine, grafana_sql(_query("Customer sales per month"), variables,
                                            start, end))
    assert {row[columns.index("time")].strftime("%Y-%m") for row in rows} == wanted


def test_anomaly_flag_figures(engine: sa.Engine, variables: dict) -> None:
    """Flags per day and rule over a long range, per hour over a short one; the latest flags
    newest first, money exact."""
    columns, rows = run(engine, grafana_sql(_query("Anomaly flags"), variables))
    assert {(row[columns.index("time")], row[columns.index("metric")]):
            row[columns.index("flags")] for row in rows} == {
        (datetime.combine(day, datetime.min.time()), rule): n
        for (day, rule), n in BY_DAY_AND_RULE.items()}

    start, end = 1772323200, 1772582400  # 2026-03-01 00:00 .. 2026-03-04 00:00 UTC: 3 days
    columns, rows = run(engine, grafana_sql(_query("Anomaly flags"), variables, start, end))
    by_hour: dict[tuple[datetime, str], int] = {}
    for flag in FLAGS:
        hour = flag["first_flagged_at"].replace(minute=0, second=0)
        by_hour[(hour, flag["rule"])] = by_hour.get((hour, flag["rule"]), 0) + 1
    assert {(row[columns.index("time")], row[columns.index("metric")]):
            row[columns.index("flags")] for row in rows} == by_hour
    assert len({row[columns.index("time")] for row in rows}) == 4  # 4 hours have flags

    columns, rows = run(engine, grafana_sql(_query("Latest anomaly flags"), variables))
    # newest first; the two flags of 2026-03-01 10:00 by rule: multi_store_day, price_off_list
    assert [row[columns.index("entity")] for row in rows] == [
        "sale:s-002", "team:121:9:2025-04", "customer:501:2025-04", "customer:1:2025-03-05",
        "sale:s-001"]
    by_entity = {f["entity"]: f for f in FLAGS}
    for row in rows:
        flag = by_entity[row[columns.index("entity")]]
        assert row[columns.index("observed")] == flag["observed"]
        assert row[columns.index("expected")] == flag["expected"]

