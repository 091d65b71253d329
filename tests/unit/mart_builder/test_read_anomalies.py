"""`MartWriter.read_anomalies` on an SQLite file (no network): the filters of
`salesflow anomalies` in SQL, the order, exact money, and a clear refusal of a database
without the table. The same rows on MariaDB: tests/integration/test_cli_verbs.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from mart_builder.db import make_engine
from mart_builder.schema import migrate
from mart_builder.writer import MartWriter
from salesflow.errors import ConfigError
from salesflow.settings import Settings
from tests.anomaly_flags import FLAGS, ORDER, insert_flags


def engine_at(path: Path) -> sa.Engine:
    return make_engine(Settings(_env_file=None, mart_db_url=f"sqlite:///{path}"))  # type: ignore[call-arg]


@pytest.fixture
def writer(tmp_path: Path) -> MartWriter:
    engine = engine_at(tmp_path / "marts.db")
    migrate(engine)
    insert_flags(engine)
    yield MartWriter(engine)
    engine.dispose()


def entities(rows: list[dict]) -> list[str]:
    return [r["entity"] for r in rows]


def test_every_flag_oldest_first_then_rule_then_entity(writer: MartWriter) -> None:
    rows = writer.read_anomalies()
    assert entities(rows) == ORDER
    by_entity = {f["entity"]: f for f in FLAGS}
    for row in rows:  # every column back as written: exact decimals, the same time
        assert row == by_entity[row["entity"]], row["entity"]
    assert rows[-1]["observed"] == Decimal("999999999999.99")


def test_one_rule(writer: MartWriter) -> None:
    assert entities(writer.read_anomalies(rule="price_off_list")) == ["sale:s-001", "sale:s-002"]
    assert writer.read_anomalies(rule="no_such_rule") == []


def test_since_keeps_flags_at_or_after_the_instant(writer: MartWriter) -> None:
    assert entities(writer.read_anomalies(since=datetime(2026, 3, 3))) == ["sale:s-002"]
    assert entities(writer.read_anomalies(since=datetime(2026, 3, 2, 23, 59, 59))) == [
        "team:121:9:2025-04", "sale:s-002"]
    assert writer.read_anomalies(since=datetime(2026, 3, 3, 0, 0, 1)) == []
    assert entities(writer.read_anomalies(rule="price_off_list",
                                          since=datetime(2026, 3, 1, 10))) == [
        "sale:s-001", "sale:s-002"]


def test_an_aware_since_is_compared_in_utc(writer: MartWriter) -> None:
    """01:00 at UTC+1 is midnight UTC: the flag at exactly midnight UTC is kept."""
    plus_one = datetime(2026, 3, 3, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert entities(writer.read_anomalies(since=plus_one)) == ["sale:s-002"]
    assert entities(writer.read_anomalies(since=datetime(2026, 3, 3, tzinfo=UTC))) == [
        "sale:s-002"]


def test_a_database_without_the_table_is_refused_and_left_alone(tmp_path: Path) -> None:
    engine = engine_at(tmp_path / "old.db")
    with engine.begin() as conn:  # a database of an older release: some other table only
        conn.exec_driver_sql("CREATE TABLE customers_data_mart (customer_id INTEGER)")
    with pytest.raises(ConfigError, match="has no table sales_anomalies"):
        MartWriter(engine).read_anomalies()
    assert sa.inspect(engine).get_table_names() == ["customers_data_mart"]
    engine.dispose()
