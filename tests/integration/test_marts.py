"""The examples through the real pipeline into real MariaDB and SQLite, cell by cell."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date
from decimal import Decimal

import pytest

from mart_builder.builder import MartBuilder
from mart_builder.commands import open_writer
from producers.dims import produce_dims
from producers.sales import produce_sales
from salesflow.codec import Codec
from salesflow.kafka import partition_for
from salesflow.topics import Topics
from tests.conftest import DATA
from tests.marts_expected import assert_marts_equal, load_expected_customers, load_expected_team
from tests.workers import MartFollower, StreamWorker, wait_until_processed, worker_env

pytestmark = pytest.mark.integration
CUSTOMER_KEY = ("customer_id", "sales_date_month")
TEAM_KEY = ("store_id", "sales_person_id", "sales_month")


@pytest.fixture(params=["sqlite", "mysql"])
def mart_settings(request, settings, tmp_path):
    if request.param == "mysql":
        url = request.getfixturevalue("mysql_url")
        writer = open_writer(settings.model_copy(update={"mart_db_url": url}))
        with writer.engine.begin() as conn:  # one database per session: start empty
            for table in ("customers_data_mart", "sales_team_data_mart"):
                conn.exec_driver_sql(f"DELETE FROM {table}")
        return settings.model_copy(update={"mart_db_url": url})
    return settings


def salesflow(settings, *args, timeout=300):
    result = subprocess.run([sys.executable, "-m", "salesflow_cli", *args],
                            capture_output=True, text=True, timeout=timeout,
                            env=worker_env(settings))
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_examples_stream_flush_and_rebuild_match_the_expected_marts(mart_settings, tmp_path):
    settings = mart_settings
    produce_dims(settings, DATA)
    with StreamWorker(settings, tmp_path):
        produce_sales(settings, [DATA / "sales_part1.csv"])
        produce_sales(settings, [DATA / "sales_part2.csv"])
        wait_until_processed(settings)
        salesflow(settings, "marts", "flush")
    writer = open_writer(settings)
    assert_marts_equal(writer.read_customers(), load_expected_customers(), CUSTOMER_KEY)
    assert_marts_equal(writer.read_team(), load_expected_team(), TEAM_KEY)
    assert writer.row_counts()["customer"] == 12

    salesflow(settings, "marts", "rebuild")
    assert_marts_equal(writer.read_customers(), load_expected_customers(), CUSTOMER_KEY)
    assert_marts_equal(writer.read_team(), load_expected_team(), TEAM_KEY)


def test_periodic_flush_and_a_late_sale_restates_exactly_the_affected_rows(settings, tmp_path):
    produce_dims(settings, DATA)
    writer = open_writer(settings)
    with StreamWorker(settings, tmp_path), MartFollower(settings, tmp_path, "follower"):
        produce_sales(settings, [DATA / "sales_part1.csv", DATA / "sales_part2.csv"])
        wait_until_processed(settings)
        deadline = time.monotonic() + 60
        while len(writer.read_team()) < 55 and time.monotonic() < deadline:
            time.sleep(0.5)  # the follower's periodic flush, every second in tests
        before_c = {(r["customer_id"], r["sales_date_month"]): r for r in writer.read_customers()}
        before_t = {(r["store_id"], r["sales_person_id"], r["sales_month"]): r
                    for r in writer.read_team()}
        assert len(before_c) == 53 and len(before_t) == 55

        # A late sale: customer 5 buys in store 124 from salesperson 13 in 2025-06.
        late = {"sale_id": "late-sale-1", "customer_id": 5, "store_id": 124,
                "product_name": "sugar", "sales_date": date(2025, 6, 20), "sales_person_id": 13,
                "price": Decimal("50.00"), "quantity": 2, "total_cost": Decimal("100.00")}
        from salesflow.delivery import Sender
        with Sender(settings) as sender:
            sender.send(Topics(settings.namespace).sales, Codec().encode("sale", late),
                        key=b"late-sale-1", partition=partition_for("late-sale-1", 6))
        wait_until_processed(settings)
        builder = MartBuilder(settings, writer)
        builder.flush()
        builder.close()
    after_c = {(r["customer_id"], r["sales_date_month"]): r for r in writer.read_customers()}
    after_t = {(r["store_id"], r["sales_person_id"], r["sales_month"]): r
               for r in writer.read_team()}
    changed_c = {k for k in after_c if after_c[k] != before_c.get(k)}
    changed_t = {k for k in after_t if after_t[k] != before_t.get(k)}
    # Every row of customer 5 (lifetime figures) and nothing else.
    assert changed_c == {k for k in after_c if k[0] == 5}
    assert after_c[(5, "2025-06")]["total_sales"] == Decimal("113.50")
    # Store 124: June rows (rank/contribution) and salesperson 13's later rows (YTD, growth...).
    assert (124, 13, "2025-06") in changed_t
    assert all(k[0] == 124 for k in changed_t)
    assert after_t[(124, 13, "2025-06")]["total_sales"] == Decimal("113.50")
