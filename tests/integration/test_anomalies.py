"""Anomaly flags through the real pipeline: stream app, mart builder, rebuild, on SQLite and
MariaDB. The expected rows come from the worked example (tests/data/anomalies) or, for
generated data, from the files through the pure reference (`mart_builder.anomalies`)."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from operator import itemgetter
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from mart_builder.anomalies import anomaly_rows, price_flags_of
from mart_builder.builder import MartBuilder
from mart_builder.commands import open_writer
from mart_builder.metrics import aggregate
from producers.dims import produce_dims, read_dimension
from producers.generate import GenerateSpec, generate
from producers.rows import parse_sale_row
from producers.sales import produce_sales
from salesflow.anomalies import RULES, AnomalyRules
from salesflow.dimensions import DimensionRecord
from tests.conftest import DATA
from tests.workers import StreamWorker, wait_until_processed, worker_env

pytestmark = pytest.mark.integration
EXAMPLE = DATA / "anomalies"
KEY = itemgetter("rule", "entity")
COLUMNS = ("rule", "entity", "customer_id", "store_id", "sales_person_id", "sale_id", "period",
           "observed", "expected")


@pytest.fixture(params=["sqlite", "mysql"])
def mart_settings(request, settings):
    if request.param == "mysql":
        url = request.getfixturevalue("mysql_url")
        writer = open_writer(settings.model_copy(update={"mart_db_url": url}))
        with writer.engine.begin() as conn:  # one database per session: start empty
            for table in ("customers_data_mart", "sales_team_data_mart", "sales_anomalies"):
                conn.exec_driver_sql(f"DELETE FROM {table}")
        return settings.model_copy(update={"mart_db_url": url})
    return settings


def salesflow(settings, *args):
    result = subprocess.run([sys.executable, "-m", "salesflow_cli", *args],
                            capture_output=True, text=True, timeout=300,
                            env=worker_env(settings))
    assert result.returncode == 0, result.stderr
    return result.stdout


def flags(writer) -> list[dict]:
    """The table's rows without `first_flagged_at`, sorted by key."""
    return sorted(({c: r[c] for c in COLUMNS} for r in writer.read_table("sales_anomalies")),
                  key=KEY)


def first_flagged(writer) -> dict[tuple[str, str], object]:
    return {KEY(r): r["first_flagged_at"] for r in writer.read_table("sales_anomalies")}


def reference(directory: Path, sales_file: Path) -> list[dict]:
    """What must be flagged: the files through the pure rules."""
    with sales_file.open(encoding="utf-8", newline="") as f:
        sales = [parse_sale_row(row) for row in csv.DictReader(f)]
    prices = {r["name"]: DimensionRecord("product", i, r).price
              for i, r in read_dimension(directory / "product.csv", "product")}
    rules = AnomalyRules()
    customers, team = aggregate(sales)
    price_flags = price_flags_of(((s, prices[s.product_name].list_cents(s.sales_date))
                                  for s in sales), rules)
    return [r.as_dict() for r in anomaly_rows(customers.values(), team.values(), price_flags,
                                              rules)]


def test_the_worked_example_is_flagged_exactly_by_the_stream_and_the_rebuild(
        mart_settings, tmp_path):
    settings = mart_settings
    expected = reference(EXAMPLE, EXAMPLE / "sales.csv")
    assert len(expected) == 7  # the worked example's own expectation, through the reference
    produce_dims(settings, EXAMPLE)
    with StreamWorker(settings, tmp_path):
        produce_sales(settings, [EXAMPLE / "sales.csv"])
        wait_until_processed(settings)
        salesflow(settings, "marts", "flush")
    writer = open_writer(settings)
    assert flags(writer) == sorted(expected, key=KEY)
    stamped = first_flagged(writer)

    time.sleep(1.1)  # a new row would get a later first_flagged_at
    salesflow(settings, "marts", "rebuild")
    assert flags(writer) == sorted(expected, key=KEY)
    assert first_flagged(writer) == stamped  # kept across the rebuild


def test_a_late_sale_clears_a_spike_and_new_flags_are_counted(settings, tmp_path):
    """Restatement of the flags: a late sale in an earlier month explains a spike away and its
    row goes; a new flag is counted on /metrics once, and keeps its first_flagged_at."""
    produce_dims(settings, EXAMPLE)
    writer = open_writer(settings)

    def flagged_total() -> float:
        return sum(REGISTRY.get_sample_value("salesflow_anomalies_flagged_total",
                                             {"rule": rule}) or 0 for rule in RULES)

    builder = MartBuilder(settings, writer)
    try:
        with StreamWorker(settings, tmp_path):
            produce_sales(settings, [EXAMPLE / "sales.csv"])
            wait_until_processed(settings)
            before = flagged_total()
            builder.flush()
            assert flagged_total() - before == 7
            stamped = first_flagged(writer)
            spike = ("customer_spend_spike", "customer:5:2025-04")
            assert spike in stamped

            late = tmp_path / "late.csv"  # 200.00 more in January: the mean becomes 86.67
            late.write_text("sale_id,customer_id,store_id,product_name,sales_date,"
                            "sales_person_id,price,quantity,total_cost\n"
                            "late-1,5,121,sugar,2025-01-20,1,40.00,5,200.00\n",
                            encoding="utf-8")
            time.sleep(1.1)
            produce_sales(settings, [late])
            wait_until_processed(settings)
            builder.flush()
        now = first_flagged(writer)
        assert spike not in now
        assert now == {k: v for k, v in stamped.items() if k != spike}
        assert flagged_total() - before == 7  # nothing new flagged, nothing counted twice
    finally:
        builder.close()


def test_planted_anomalies_of_every_rule_are_flagged(settings, tmp_path):
    data = tmp_path / "data"
    sales = generate(data, GenerateSpec(rows=3_000, anomalies=3, start=date(2025, 1, 1),
                                        end=date(2025, 6, 30)))
    expected = reference(data, sales)
    by_rule = Counter(r["rule"] for r in expected)
    assert all(by_rule[rule] >= 3 for rule in RULES), by_rule  # every rule planted
    produce_dims(settings, data)
    with StreamWorker(settings, tmp_path):
        produce_sales(settings, [sales])
        wait_until_processed(settings)
        salesflow(settings, "marts", "flush")
    writer = open_writer(settings)
    assert flags(writer) == sorted(expected, key=KEY)
    salesflow(settings, "marts", "rebuild")
    assert flags(writer) == sorted(expected, key=KEY)
