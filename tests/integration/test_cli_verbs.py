"""The new and changed verbs through the real console script on the real stack: one line
when Kafka is down or the namespace unknown, progress on the long ones, decoded dead letters
and records, Kafka's own tools, marts an analyst can take away (CSV, Parquet), and the
anomaly flags listed from SQLite and MariaDB."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from mart_builder.commands import open_writer
from salesflow.settings import Settings
from tests.workers import StreamWorker, wait_until_processed, worker_env

pytestmark = pytest.mark.integration


def cli(settings: Settings, cwd: Path, *args: str, timeout: float = 300,
        **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "salesflow_cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd,
                          env=worker_env(settings, COLUMNS="200", **env))
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("args", [("marts", "rebuild"), ("marts", "flush"), ("dlq", "show"),
                                  ("tail", "sales"), ("dlq", "replay"), ("stream",),
                                  ("produce", "sales", "sales.csv")])
def test_kafka_down_is_one_line(settings: Settings, tmp_path: Path, args: tuple) -> None:
    down = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
    (tmp_path / "sales.csv").write_text(  # a readable file: a producer reads before it sends
        "sale_id,customer_id,store_id,product_name,sales_date,sales_person_id,price,"
        "quantity,total_cost\ns1,1,121,sugar,2025-01-01,1,50.00,1,50.00\n")
    # (a producer rides out an outage up to SALESFLOW_PRODUCER_OUTAGE_SECONDS, 300 by default)
    line = one_line(cli(down, tmp_path, *args, timeout=60,
                        SALESFLOW_PRODUCER_OUTAGE_SECONDS="5"))
    assert "no Kafka broker answered at 127.0.0.1:1" in line


def test_an_unknown_namespace_has_no_topics(settings: Settings, tmp_path: Path) -> None:
    line = one_line(cli(settings, tmp_path, "dlq", "show"))
    assert f"namespace '{settings.namespace}' has no topics" in line
    assert "no topic" in one_line(cli(settings, tmp_path, "tail", "sales"))


def test_verbs_on_a_real_pipeline(settings: Settings, tmp_path: Path) -> None:
    data = tmp_path / "data"
    generated = cli(settings, tmp_path, "produce", "generate", "--rows", "3000",
                    "--bad-fraction", "0.05", "--out", str(data))
    assert generated.returncode == 0 and "3000/3000 rows" in generated.stderr
    assert cli(settings, tmp_path, "produce", "dims", str(data)).returncode == 0
    sent = cli(settings, tmp_path, "produce", "sales", str(data / "sales.csv"))
    assert sent.returncode == 0 and "read 3000 / sent" in sent.stdout
    assert "3000/3000 rows" in sent.stderr and "/s" in sent.stderr  # the bar stays, with a rate
    with StreamWorker(settings, tmp_path):
        wait_until_processed(settings)

        letters = json.loads(cli(settings, tmp_path, "dlq", "show", "--json", "--limit",
                                 "0").stdout)
        stream_side = [x for x in letters if x["side"] == "stream"]
        assert stream_side and all(x["records"] for x in stream_side)
        sale = stream_side[0]["records"][0]
        assert {"sale_id", "customer_id", "store_id", "total_cost"} <= set(sale)
        assert any(x["side"] == "producer" and x["row"] for x in letters)
        table = cli(settings, tmp_path, "dlq", "show", "--reason", "total_mismatch")
        assert table.returncode == 0 and "customer " in table.stdout and " store " in table.stdout

        tailed = cli(settings, tmp_path, "tail", "sales", "--last", "1")
        records = [json.loads(line) for line in tailed.stdout.splitlines()]
        assert records and all(r["record"] == "sale_batch" and r["value"]["sales"]
                               for r in records)
        counts = cli(settings, tmp_path, "tail", "counts", "--from-beginning", "--limit", "1")
        assert json.loads(counts.stdout)["value"]["in"] >= 0
        valid = cli(settings, tmp_path, "tail", "valid", "--last", "1", "--limit", "1")
        assert json.loads(valid.stdout)["accepted"][0]["sale_id"]

        groups = cli(settings, tmp_path, "stack", "kafka", "consumer-groups", "--describe",
                     "--group", f"{settings.namespace}-stream",
                     SALESFLOW_CACHE_DIR=str(Path.home() / ".cache" / "salesflow"))
        assert groups.returncode == 0, groups.stderr
        assert f"{settings.namespace}.sales" in groups.stdout

    rebuilt = cli(settings, tmp_path, "marts", "rebuild")
    assert rebuilt.returncode == 0 and "rebuilt:" in rebuilt.stdout
    assert "sales" in rebuilt.stderr and "rebuilding" in rebuilt.stderr

    writer = open_writer(settings)
    customers, team = writer.read_customers(), writer.read_team()
    assert cli(settings, tmp_path, "marts", "export", "--format", "csv", "--out",
               str(tmp_path / "csv")).returncode == 0
    assert cli(settings, tmp_path, "marts", "export", "--format", "parquet", "--out",
               str(tmp_path / "parquet")).returncode == 0
    import pandas as pd
    import pyarrow.dataset as ds

    frame = pd.read_csv(tmp_path / "csv" / "customers_data_mart.csv")
    assert len(frame) == len(customers)
    table = ds.dataset(tmp_path / "parquet" / "customers_data_mart", format="parquet",
                       partitioning="hive").to_table()
    assert table.num_rows == len(customers)
    months = {p.name for p in (tmp_path / "parquet" / "customers_data_mart").iterdir()}
    assert months == {f"sales_date_month={r['sales_date_month']}" for r in customers}
    by_key = {(r["customer_id"], r["sales_date_month"]): r for r in customers}
    for row in table.to_pylist():
        expected = by_key[(row["customer_id"], row["sales_date_month"])]
        assert row["customer_lifetime_value"] == Decimal(expected["customer_lifetime_value"])
    team_frame = pd.read_parquet(tmp_path / "parquet" / "sales_team_data_mart")
    assert len(team_frame) == len(team)
    flags = writer.read_table("sales_anomalies")
    flag_frame = pd.read_parquet(tmp_path / "parquet" / "sales_anomalies")
    assert len(flag_frame) == len(flags) == len(pd.read_csv(tmp_path / "csv" /
                                                            "sales_anomalies.csv"))

    first = customers[0]
    shown = cli(settings, tmp_path, "marts", "show", "--customer", str(first["customer_id"]))
    assert shown.returncode == 0 and first["sales_date_month"] in shown.stdout


# --- salesflow anomalies -----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "mariadb"])
def flags_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings whose mart database (a fresh SQLite file, or a fresh MariaDB database) holds
    the flags of tests/anomaly_flags.py."""
    import uuid

    import sqlalchemy as sa

    from mart_builder.db import make_engine
    from mart_builder.schema import migrate
    from tests.anomaly_flags import insert_flags

    server, name = None, None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'marts.db'}"
    else:
        server = sa.create_engine(request.getfixturevalue("mysql_server_url"))
        name = f"salesflow_test_flags_{uuid.uuid4().hex[:10]}"
        with server.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        url = f"{server.url.render_as_string(hide_password=False)}/{name}"
    settings = Settings(_env_file=None, mart_db_url=url)  # type: ignore[call-arg]
    engine = make_engine(settings)
    migrate(engine)
    insert_flags(engine)
    engine.dispose()
    yield settings
    if server is not None:
        with server.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        server.dispose()


def flags_as_json(entities: list[str]) -> list[dict]:
    """What `--json` must print for these flags: every column, decimals as their exact text,
    the time ISO 8601 in UTC with Z (written here independently of salesflow_cli)."""
    from tests.anomaly_flags import FLAGS

    by_entity = {f["entity"]: f for f in FLAGS}
    return [by_entity[e] | {"observed": str(by_entity[e]["observed"]),
                            "expected": str(by_entity[e]["expected"]),
                            "first_flagged_at":
                                by_entity[e]["first_flagged_at"].strftime("%Y-%m-%dT%H:%M:%SZ")}
            for e in entities]


def test_anomalies_lists_the_flags(flags_db: Settings, tmp_path: Path) -> None:
    from tests.anomaly_flags import ORDER

    def listed(*args: str) -> subprocess.CompletedProcess:
        done = cli(flags_db, tmp_path, "anomalies", *args)
        assert done.returncode == 0 and not done.stderr, done.stderr
        return done

    table = listed().stdout
    assert "anomaly flags: 5" in table
    positions = [table.index(entity) for entity in ORDER]
    assert positions == sorted(positions), table  # oldest first, then rule, then entity
    for text in ("2026-03-01 10:00:00", "999999999999.99", "2120.00", "0.10"):
        assert text in table, text
    assert table.strip().splitlines()[-1] == (
        "by rule: price_off_list 2, multi_store_day 1, customer_spend_spike 1, "
        "salesperson_spike 1")

    assert json.loads(listed("--json").stdout) == flags_as_json(ORDER)
    assert json.loads(listed("--rule", "price_off_list", "--json").stdout) == flags_as_json(
        ["sale:s-001", "sale:s-002"])
    assert json.loads(listed("--since", "2026-03-03", "--json").stdout) == flags_as_json(
        ["sale:s-002"])  # 2026-03-03 00:00:00 is in, 2026-03-02 23:59:59 is out
    assert json.loads(listed("--since", "2026-03-02", "--rule", "SALESPERSON_SPIKE",
                             "--json").stdout) == flags_as_json(["team:121:9:2025-04"])

    one = listed("--rule", "customer_spend_spike").stdout
    assert "customer:501:2025-04" in one and "sale:s-001" not in one
    assert one.strip().splitlines()[-1] == "by rule: customer_spend_spike 1"
    assert listed("--rule", "multi_store_day", "--since", "2026-03-02").stdout.strip() == (
        "no anomaly flags of rule multi_store_day first flagged since 2026-03-02 (UTC)")
    assert json.loads(listed("--since", "2030-01-01", "--json").stdout) == []


def test_anomalies_without_a_database_is_one_line(tmp_path: Path) -> None:
    secret = "pa55-w0rd-not-shown"
    down = Settings(_env_file=None,  # type: ignore[call-arg]
                    mart_db_url=f"mysql+pymysql://salesflow:{secret}@127.0.0.1:1/salesflow")
    for args in ((), ("--json",)):
        done = cli(down, tmp_path, "anomalies", *args, timeout=60)
        line = one_line(done)
        assert done.returncode == 1 and not done.stdout, done.stdout
        assert line.startswith("salesflow: mart database ") and "127.0.0.1:1" in line, line
        assert "reading sales_anomalies failed" in line
        assert secret not in done.stderr + done.stdout
