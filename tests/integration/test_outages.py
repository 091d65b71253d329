"""Self-healing: the mart database down for 30 s, the Kafka broker restarted, while sales flow.

Each test runs its own MariaDB or Kafka (the project's `salesflow stack` on other ports and a
private folder), so stopping it disturbs nothing else. Afterwards the marts must be exact.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import pytest

from mart_builder.commands import open_writer
from producers.dims import produce_dims
from producers.generate import GenerateSpec, generate
from producers.sales import produce_sales
from salesflow.settings import Settings
from salesflow.stack import kafka as stack_kafka
from salesflow.stack import mariadb as stack_mariadb
from tests.marts_expected import assert_marts_equal
from tests.workers import MartFollower, StreamWorker, wait_until_processed

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CUSTOMER_KEY = ("customer_id", "sales_date_month")
TEAM_KEY = ("store_id", "sales_person_id", "sales_month")


def expected_marts(settings: Settings, tmp_path: Path) -> tuple[list, list]:
    """The same input rebuilt from the valid-sales history into a separate SQLite file."""
    from mart_builder.rebuild import rebuild

    reference = settings.model_copy(update={"mart_db_url": f"sqlite:///{tmp_path}/ref.db"})
    writer = open_writer(reference)
    rebuild(reference, writer)
    return writer.read_customers(), writer.read_team()


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_database_down_for_30_seconds_during_flushes(settings, tmp_path):
    db_stack = settings.model_copy(update={"stack_dir": tmp_path / "stack",
                                           "mysql_port": free_port()})
    stack_mariadb.up(db_stack)
    try:
        port = free_port()
        live = settings.model_copy(update={"mart_db_url": stack_mariadb.url(db_stack),
                                           "metrics_port": port})
        data = tmp_path / "data"
        sales = generate(data, GenerateSpec(rows=6000, customers=300, bad_fraction=0.02))
        produce_dims(live, data)
        writer = open_writer(live)
        with StreamWorker(live, tmp_path, SALESFLOW_METRICS_PORT="0"), \
                MartFollower(live, tmp_path, "follower") as follower:
            produce_sales(live, [sales], batch_size=100)
            wait_until_processed(live)
            deadline = time.monotonic() + 60
            # (the follower may flush before the stream's output arrives: wait for the rows)
            while not writer.read_customers() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert writer.read_customers(), "no flush before the outage"
            stack_mariadb.down(db_stack)  # the database goes away while flushes run
            more = generate(tmp_path / "more", GenerateSpec(rows=3000, customers=300, seed=7))
            produce_sales(live, [more], batch_size=100)  # the stream keeps consuming
            wait_until_processed(live)
            time.sleep(30 - 5)
            assert metric(port, "salesflow_mart_flush_failures_total") > 0
            assert metric(port, "salesflow_dependency_retries_total") > 0
            assert follower.proc is not None and follower.proc.poll() is None
            stack_mariadb.up(db_stack)
            deadline = time.monotonic() + 90
            customers, team = expected_marts(live, tmp_path)
            while time.monotonic() < deadline:
                try:
                    if len(writer.read_customers()) == len(customers):
                        break
                except Exception:  # the database is still coming back
                    pass
                time.sleep(1)
            time.sleep(2)  # one more interval, so a flush that was running is complete
        assert_marts_equal(writer.read_customers(), customers, CUSTOMER_KEY)
        assert_marts_equal(writer.read_team(), team, TEAM_KEY)
    finally:
        stack_mariadb.down(db_stack, wipe=True)


def test_broker_restart_while_sales_flow(settings, tmp_path):
    kafka_port = free_port()
    broker = settings.model_copy(update={"stack_dir": tmp_path / "stack",
                                         "kafka_bootstrap": f"127.0.0.1:{kafka_port}"})
    if stack_kafka.listen_address(broker)[1] + 1 == kafka_port:  # pragma: no cover
        pytest.fail("port clash")
    stack_kafka.up(broker)
    try:
        data = tmp_path / "data"
        sales = generate(data, GenerateSpec(rows=8000, customers=300, bad_fraction=0.02))
        produce_dims(broker, data)
        writer = open_writer(broker)
        with StreamWorker(broker, tmp_path) as worker:
            sender = threading.Thread(target=produce_sales, args=(broker, [sales]),
                                      kwargs={"batch_size": 50})
            sender.start()
            time.sleep(2)
            stack_kafka.down(broker)  # mid-stream
            time.sleep(5)
            stack_kafka.up(broker)
            sender.join(180)
            assert not sender.is_alive()
            wait_until_processed(broker, timeout=180)
            assert worker.proc is not None and worker.proc.poll() is None, "worker died"
        customers, team = expected_marts(broker, tmp_path)
        from mart_builder.builder import MartBuilder

        builder = MartBuilder(broker, writer)
        builder.flush()
        builder.close()
        assert_marts_equal(writer.read_customers(), customers, CUSTOMER_KEY)
        assert_marts_equal(writer.read_team(), team, TEAM_KEY)
        # And the reference itself is the direct computation from the CSV's valid rows.
        assert len(customers) > 0
    finally:
        stack_kafka.down(broker, wipe=True)
