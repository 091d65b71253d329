"""The mart builder against the real broker and databases, fed the stream app's output directly.

The stream app's changelog records (partial aggregates per partition, `salesflow.tables`) and
counts are written here as the stream app writes them, so each test controls exactly what
the builder reads: values the marts cannot hold, a moving data clock, a restart, a deleted
key, a lock held on the marts, a broker that goes away.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from mart_builder.builder import MartBuilder
from mart_builder.commands import open_writer
from mart_builder.follow import PeriodicFlusher
from producers.dims import produce_dims
from salesflow.errors import KafkaUnavailable
from salesflow.kafka import client_config, ensure_topics
from salesflow.sale import Sale
from salesflow.settings import Settings
from salesflow.tables import (
    COUNTS,
    COUNTS_KEY,
    CUSTOMERS,
    TEAM,
    CustomerMonth,
    PartitionCounts,
    TeamMonth,
)
from salesflow.topics import Topics
from tests.conftest import DATA
from tests.workers import worker_env

pytestmark = pytest.mark.integration

D0 = date(2025, 3, 1)
TOO_MUCH = 9_999_999_999  # the largest sale the contract accepts, in cents (99,999,999.99)


class StreamOutput:
    """Writes what the stream app would for accepted sales: partials, counts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.namespace)
        ensure_topics(settings, [self.topics.changelog(t) for t in (CUSTOMERS, TEAM, COUNTS)])
        self.producer = Producer(client_config(settings))
        self.customers: dict[tuple[int, bytes], CustomerMonth] = {}
        self.team: dict[tuple[int, bytes], TeamMonth] = {}
        self.counts: dict[int, PartitionCounts] = defaultdict(PartitionCounts)
        self.n = 0

    def add(self, sales: list[Sale], partition: int = 0, newest_ms: int | None = None) -> None:
        for sale in sales:
            c = CustomerMonth(sale.customer_id, sale.month)
            c = self.customers.setdefault((partition, c.key), c)
            c.add(sale)
            self._send(CUSTOMERS, partition, c.key, c.encode())
            t = TeamMonth(sale.store_id, sale.sales_person_id, sale.month)
            t = self.team.setdefault((partition, t.key), t)
            t.add(sale)
            self._send(TEAM, partition, t.key, t.encode())
        counts = self.counts[partition]
        counts.accepted += len(sales)
        counts.newest_ms = newest_ms or int(time.time() * 1000)
        self._send(COUNTS, partition, COUNTS_KEY, counts.encode())
        self.producer.flush(30)

    def delete(self, key: bytes, partition: int = 0) -> None:
        self._send(CUSTOMERS, partition, key, None)
        self.producer.flush(30)

    def _send(self, table: str, partition: int, key: bytes, value: bytes | None) -> None:
        self.producer.produce(self.topics.changelog(table), value, key, partition=partition)


def sale(customer: int, day: date, cents: int, store: int = 121, person: int = 1) -> Sale:
    sale.n = getattr(sale, "n", 0) + 1  # type: ignore[attr-defined]
    return Sale(f"s{sale.n}", customer, store, "sugar", day, person, cents, 1,  # type: ignore
                cents)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(params=["sqlite", "mariadb"])
def db_settings(request, settings: Settings) -> Settings:
    if request.param == "mariadb":
        url = request.getfixturevalue("mysql_url")
        engine = sa.create_engine(url)
        with engine.begin() as conn:  # one database per session: start empty
            for table in sa.inspect(conn).get_table_names():
                conn.exec_driver_sql(f"DROP TABLE {table}")
        engine.dispose()
        return settings.model_copy(update={"mart_db_url": url})
    return settings


@pytest.fixture
def mariadb_settings(settings: Settings, mysql_url: str) -> Settings:
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        for table in sa.inspect(conn).get_table_names():
            conn.exec_driver_sql(f"DROP TABLE {table}")
    engine.dispose()
    return settings.model_copy(update={"mart_db_url": mysql_url})


def history(customers: range, months: int = 6) -> list[Sale]:
    return [sale(c, D0 + timedelta(days=31 * m + c % 20), 1000 + 7 * c + m, person=1 + c % 3)
            for c in customers for m in range(months)]


# --- issue 12.5: values the marts cannot hold --------------------------------------------------


def test_sums_the_marts_cannot_hold_are_quarantined_and_every_other_row_written(
        mariadb_settings: Settings) -> None:
    """Lifetime value of 10,001 of the largest sales overflows DECIMAL(14,2): the old builder
    failed every flush ("Out of range value for column"); now those rows wait in the
    quarantine with the database's error and everything else is written."""
    settings = mariadb_settings
    produce_dims(settings, DATA)
    out = StreamOutput(settings)
    out.add(history(range(1, 13)))
    big = CustomerMonth(99, "2025-06", TOO_MUCH * 10_001, 10_001, TOO_MUCH,
                        date(2025, 6, 1), date(2025, 6, 20))
    out._send(CUSTOMERS, 1, big.key, big.encode())
    out._send(TEAM, 1, TeamMonth(122, 5, "2025-06").key,
              TeamMonth(122, 5, "2025-06", TOO_MUCH * 10_001, 10_001, TOO_MUCH).encode())
    out.producer.flush(30)
    writer = open_writer(settings)
    refused_before = sample("salesflow_mart_rows_refused_total", mart="customers")
    builder = MartBuilder(settings, writer)
    try:
        result = builder.flush()
        assert {(r.table, r.key) for r in result.refused} == {
            ("customers_data_mart", (99, "2025-06")),
            ("sales_team_data_mart", (122, 5, "2025-06"))}
        assert all("Out of range" in r.error for r in result.refused)
        customers = writer.read_customers()
        assert len(customers) == 12 * 6 and 99 not in {r["customer_id"] for r in customers}
        assert len(writer.read_team()) == 3 * 6  # store 121's persons 1-3; not store 122's
        quarantine = writer.quarantined()
        assert [(q["mart"], q["row_key"]) for q in quarantine] == [
            ("customers_data_mart", '[99, "2025-06"]'),
            ("sales_team_data_mart", '[122, 5, "2025-06"]')]
        assert "Out of range value for column" in quarantine[0]["error"]
        lifetime = TOO_MUCH * 10_001
        assert f'"customer_lifetime_value": "{lifetime // 100}.{lifetime % 100:02d}"' in \
            quarantine[0]["row_values"]
        assert sample("salesflow_mart_rows_refused_total", mart="customers") == \
            refused_before + 1
        # The next flushes do not fail and do not retry the same values.
        out.add([sale(3, D0 + timedelta(days=200), 500)])
        again = builder.flush()
        assert again.refused == () and again.customer_rows == 7  # customer 3: 6 + 1 month
    finally:
        builder.close()
    from salesflow_cli.status import collect

    status = collect(settings)
    assert status.quarantined == {"customers_data_mart": 1, "sales_team_data_mart": 1}


def test_a_failed_flush_is_shown_by_status(settings: Settings) -> None:
    """The old status said `database_error: null` while every flush failed."""
    produce_dims(settings, DATA)
    out = StreamOutput(settings)
    out.add(history(range(1, 4)))
    flusher = PeriodicFlusher(settings)
    assert flusher.run_once() is not None
    writer = flusher.builder.writer
    with writer.engine.begin() as conn:  # a column dropped under us: every flush refused
        conn.exec_driver_sql("ALTER TABLE customers_data_mart DROP COLUMN customer_segment")
    out.add([sale(2, D0 + timedelta(days=9), 100)])
    assert flusher.run_once() is None
    flusher.builder.close()
    from salesflow_cli.status import collect

    status = collect(settings)
    assert status.last_flush is not None
    assert status.last_flush_error["finished_at"] >= status.last_flush["finished_at"]
    assert "writing a flush failed" in status.last_flush_error["error"]
    assert "customer_segment" in status.last_flush_error["error"]


# --- issue 16: write only what changed ---------------------------------------------------------


def test_a_restarted_builder_writes_nothing_that_the_tables_already_hold(
        db_settings: Settings) -> None:
    settings = db_settings
    produce_dims(settings, DATA)
    StreamOutput(settings).add(history(range(1, 13)))
    writer = open_writer(settings)
    first = MartBuilder(settings, writer)
    try:
        assert first.flush().customer_rows == 72
        assert first.flush().customer_rows == 0  # nothing new
    finally:
        first.close()
    restarted = MartBuilder(settings, writer)
    try:
        result = restarted.flush()  # reads every changelog again, compares with the tables
    finally:
        restarted.close()
    assert (result.customer_rows, result.team_rows, result.deleted_rows) == (0, 0, 0)
    assert len(writer.read_customers()) == 72


def test_a_flush_that_fails_while_reading_loses_no_record(settings: Settings) -> None:
    """A read that fails in the middle of a batch (an error event between records, a handler
    that raises) must not leave the records after it behind: the next flush reads them."""
    produce_dims(settings, DATA)
    StreamOutput(settings).add(history(range(1, 13)))
    writer = open_writer(settings)
    builder = MartBuilder(settings, writer)
    topic = Topics(settings.namespace).changelog(CUSTOMERS)
    handle, calls = builder.reader.handlers[topic], []

    def failing_once(partition: int, key: bytes | None, value: bytes | None) -> None:
        calls.append(key)
        if len(calls) == 10:
            raise KafkaUnavailable("reading: the broker went away mid-batch")
        handle(partition, key, value)

    builder.reader.handlers[topic] = failing_once
    try:
        with pytest.raises(KafkaUnavailable):
            builder.flush()
        assert builder.flush().customer_rows == 72
    finally:
        builder.close()
    assert len(writer.read_customers()) == 72


def test_a_moving_data_clock_writes_only_the_inactive_flips(settings: Settings) -> None:
    produce_dims(settings, DATA)
    out = StreamOutput(settings)
    # customer c's only sale is on day c of 2025: as_of moves from day 12 to day 112
    out.add([sale(c, date(2025, 1, 1) + timedelta(days=c), 100) for c in range(1, 13)])
    writer = open_writer(settings)
    builder = MartBuilder(settings, writer)
    try:
        assert builder.flush().customer_rows == 12
        before = {r["customer_id"]: r for r in writer.read_customers()}
        assert not any(r["inactive_status"] for r in before.values())
        out.add([sale(12, date(2025, 1, 1) + timedelta(days=112), 100)])
        result = builder.flush()
    finally:
        builder.close()
    after = {(r["customer_id"], r["sales_date_month"]): r for r in writer.read_customers()}
    flipped = {k for k, r in after.items() if r["inactive_status"]}
    # last sale on day c, as_of day 112: inactive when 112 - c > 90, i.e. c < 22 (all but 12)
    assert flipped == {(c, f"{date(2025, 1, 1) + timedelta(days=c):%Y-%m}") for c in range(1, 12)}
    assert result.customer_rows == 11 + 2  # the flips, and customer 12's two months


def test_a_key_that_is_gone_loses_its_row(db_settings: Settings) -> None:
    settings = db_settings
    produce_dims(settings, DATA)
    out = StreamOutput(settings)
    out.add(history(range(1, 3), months=2))
    writer = open_writer(settings)
    builder = MartBuilder(settings, writer)
    try:
        builder.flush()
        assert len(writer.read_customers()) == 4
        gone = CustomerMonth(2, f"{D0 + timedelta(days=31 + 2):%Y-%m}")
        out.delete(gone.key)
        result = builder.flush()
    finally:
        builder.close()
    assert result.deleted_rows == 1
    rows = writer.read_customers()
    assert (2, gone.month) not in {(r["customer_id"], r["sales_date_month"]) for r in rows}
    assert [r["purchase_frequency"] for r in rows if r["customer_id"] == 2] == [1]


def test_freshness_is_the_age_of_the_newest_sale_flushed(settings: Settings) -> None:
    produce_dims(settings, DATA)
    out = StreamOutput(settings)
    sent = int(time.time() * 1000) - 4_000  # the newest sale was sent 4 s ago
    out.add(history(range(1, 3)), partition=0, newest_ms=sent - 60_000)
    out.add(history(range(3, 5)), partition=2, newest_ms=sent)
    builder = MartBuilder(settings, open_writer(settings))
    try:
        builder.flush()
    finally:
        builder.close()
    age = sample("salesflow_mart_freshness_seconds")
    assert 4 <= age < 4 + 60  # 4 s plus however long this test took since


# --- issue 12.6: SIGTERM ends `marts follow` within seconds, whatever it is doing -----------------


def test_sigterm_stops_a_follower_whose_flush_waits_on_a_lock(mariadb_settings: Settings,
                                                              tmp_path: Path) -> None:
    settings = mariadb_settings
    produce_dims(settings, DATA)
    out = StreamOutput(settings)
    out.add(history(range(1, 13)))
    writer = open_writer(settings)
    log_path = tmp_path / "follower.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "salesflow_cli", "marts", "follow"],
                                stdout=log, stderr=subprocess.STDOUT, env=worker_env(settings),
                                start_new_session=True)
    locker = sa.create_engine(settings.mart_db_url)
    try:
        deadline = time.monotonic() + 60
        while writer.last_run("flush") is None:
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.3)
        with locker.connect() as conn:
            trans = conn.begin()
            conn.exec_driver_sql("SELECT * FROM customers_data_mart FOR UPDATE").fetchall()
            out.add([sale(c, D0 + timedelta(days=300), 100) for c in range(1, 13)])
            time.sleep(3)  # the next flush is now waiting for the row locks
            started = time.monotonic()
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                pytest.fail("the follower did not stop within 20 s of SIGTERM:\n"
                            + log_path.read_text())
            stopped_after = time.monotonic() - started
            trans.rollback()
        assert stopped_after < 12, log_path.read_text()
        assert "exiting without it" in log_path.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        locker.dispose()


# --- issue 12.10: Kafka down during a flush is a dependency failure ---------------------------


@pytest.mark.slow
def test_kafka_down_during_a_flush_is_counted_as_a_kafka_outage(settings: Settings,
                                                                tmp_path: Path) -> None:
    import socket

    from salesflow.stack import kafka as stack_kafka

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    broker = settings.model_copy(update={"stack_dir": tmp_path / "stack",
                                         "kafka_bootstrap": f"127.0.0.1:{port}"})
    stack_kafka.up(broker)
    try:
        produce_dims(broker, DATA)
        StreamOutput(broker).add(history(range(1, 4)))
        flusher = PeriodicFlusher(broker)
        assert flusher.run_once() is not None
        before = (sample("salesflow_dependency_retries_total", dependency="kafka"),
                  sample("salesflow_mart_flush_failures_total", kind="KafkaUnavailable"))
        stack_kafka.down(broker)
        started = time.monotonic()
        done = threading.Event()
        result: list = []
        thread = threading.Thread(target=lambda: (result.append(flusher.run_once()),
                                                  done.set()))
        thread.start()
        assert done.wait(90), "the flush hung with Kafka down"
        assert time.monotonic() - started < 60
        assert result == [None]
        assert sample("salesflow_dependency_retries_total", dependency="kafka") == before[0] + 1
        assert sample("salesflow_mart_flush_failures_total", kind="KafkaUnavailable") == \
            before[1] + 1
        failure = flusher.builder.writer.last_run("failure")
        assert failure is not None and "reading the changelogs" in failure["error"]
        flusher.builder.close()
    finally:
        stack_kafka.down(broker, wipe=True)


def test_a_rebuild_quarantines_what_the_database_refuses(mariadb_settings: Settings) -> None:
    from mart_builder.rebuild import rebuild
    from salesflow.codec import Codec

    settings = mariadb_settings
    produce_dims(settings, DATA)
    codec = Codec()
    big = [sale(1, date(2025, 5, 1), TOO_MUCH, store=121, person=2) for _ in range(10_001)]
    small = [sale(2, date(2025, 5, 2), 1250, store=121, person=1)]
    valid = Topics(settings.namespace).valid_sales
    ensure_topics(settings, [valid])  # the stream app's topic (producers create only theirs)
    producer = Producer(client_config(settings))
    for sales in (big, small):
        message = codec.encode("sale_batch", {"sales": [s.to_record() for s in sales]})
        producer.produce(valid, codec.encode_valid_sales(
            [(message, list(range(len(sales))), [s.price_cents for s in sales])]), partition=0)
    assert producer.flush(30) == 0
    writer = open_writer(settings)
    result = rebuild(settings, writer)
    assert {(r.table, r.key) for r in result.refused} == {
        ("customers_data_mart", (1, "2025-05")), ("sales_team_data_mart", (121, 2, "2025-05"))}
    assert [(r["customer_id"], r["total_sales"]) for r in writer.read_customers()] == [
        (2, Decimal("12.50"))]
    assert [q["row_key"] for q in writer.quarantined()] == ['[1, "2025-05"]',
                                                            '[121, 2, "2025-05"]']
    rebuild(settings, writer)  # again: the same quarantine, not twice
    assert len(writer.quarantined()) == 2
