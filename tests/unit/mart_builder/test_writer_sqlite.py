"""The mart database layer on SQLite files (no network): schema, engines, error mapping.

The behaviour both databases share (round trips, upserts, rollback, rebuild, migration) is
asserted on SQLite *and* MariaDB in tests/integration/test_mart_db.py.
"""

from __future__ import annotations

import sqlite3
import traceback
from decimal import Decimal
from pathlib import Path

import pymysql
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from mart_builder.db import is_transient, make_engine, to_salesflow_error
from mart_builder.metrics import (
    CUSTOMER_COLUMNS,
    CUSTOMER_KEY,
    TEAM_COLUMNS,
    TEAM_KEY,
    CustomerMartRow,
)
from mart_builder.schema import (
    DIMENSION_TABLES,
    SCHEMA_VERSION,
    customers_data_mart,
    migrate,
    sales_team_data_mart,
    salesflow_schema,
)
from mart_builder.writer import MartWriter, TableChanges, WriteStats
from salesflow.errors import ConfigError, DatabaseRejected, DatabaseUnavailable
from salesflow.settings import Settings

SECRET = "pa55-w0rd-never-shown"


def settings_for(url: str, password: str | None = None) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        mart_db_url=url,
        mart_db_password=SecretStr(password) if password else None,
    )


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = make_engine(settings_for(f"sqlite:///{tmp_path / 'marts.db'}"))
    migrate(engine)
    yield engine
    engine.dispose()


def a_customer(customer_id: int = 1, month: str = "2025-01", **changes) -> CustomerMartRow:
    values = dict(
        customer_id=customer_id, full_name="Asha Rao", address="Delhi, 110011",
        phone_number="9100000001", sales_date_month=month, total_sales=Decimal("10.50"),
        customer_lifetime_value=Decimal("10.50"), first_purchase_month=month,
        last_purchase_month=month, purchase_frequency=1, monetary_value=Decimal("10.50"),
        avg_monthly_spending=Decimal("10.50"), max_single_transaction=Decimal("10.50"),
        avg_time_between_purchases=None, inactive_status=False, customer_segment="Occasional",
    )
    return CustomerMartRow(**(values | changes))


# --- schema -----------------------------------------------------------------------------------


def test_tables_follow_the_metric_rows_columns_and_keys() -> None:
    assert tuple(customers_data_mart.columns.keys()) == CUSTOMER_COLUMNS
    assert tuple(sales_team_data_mart.columns.keys()) == TEAM_COLUMNS
    assert tuple(customers_data_mart.primary_key.columns.keys()) == CUSTOMER_KEY
    assert tuple(sales_team_data_mart.primary_key.columns.keys()) == TEAM_KEY
    money = customers_data_mart.c.customer_lifetime_value.type
    assert isinstance(money, sa.Numeric) and (money.precision, money.scale) == (14, 2)
    assert customers_data_mart.c.sales_date_month.type.length == 7
    assert isinstance(customers_data_mart.c.inactive_status.type, sa.Boolean)
    assert list(DIMENSION_TABLES) == ["customer", "store", "product", "sales_team"]
    assert DIMENSION_TABLES["product"].primary_key.columns.keys() == ["id"]


def test_mysql_ddl_is_decimal_14_2_and_utf8mb4() -> None:
    from sqlalchemy.dialects import mysql
    from sqlalchemy.schema import CreateTable

    ddl = str(CreateTable(customers_data_mart).compile(dialect=mysql.dialect()))
    assert "customer_lifetime_value NUMERIC(14, 2) NOT NULL" in ddl
    assert "avg_time_between_purchases NUMERIC(14, 2)," in ddl  # nullable
    assert "PRIMARY KEY (customer_id, sales_date_month)" in ddl
    assert "CHARSET=utf8mb4" in ddl and "ENGINE=InnoDB" in ddl


def test_migrate_is_idempotent_and_records_the_version(engine: sa.Engine) -> None:
    assert migrate(engine) == SCHEMA_VERSION
    with engine.connect() as conn:
        assert conn.execute(sa.select(salesflow_schema.c.version)).scalars().all() == [
            SCHEMA_VERSION
        ]
        assert set(sa.inspect(conn).get_table_names()) >= {
            "customers_data_mart", "sales_team_data_mart", "customer", "store", "product",
            "sales_team", "salesflow_schema",
        }


# --- engines ----------------------------------------------------------------------------------


def test_sqlite_engine_uses_wal(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_sqlite_reads_in_one_transaction_see_one_snapshot(engine: sa.Engine) -> None:
    """BEGIN is ours: two SELECTs of one connection can't straddle another's commit."""
    writer = MartWriter(engine)
    writer.write([a_customer(1)], [])
    with engine.connect() as reader:
        first = reader.execute(sa.select(sa.func.count()).select_from(customers_data_mart))
        assert first.scalar() == 1
        writer.write([a_customer(2)], [])  # commits while the reader's transaction is open
        again = reader.execute(sa.select(sa.func.count()).select_from(customers_data_mart))
        assert again.scalar() == 1
    assert writer.row_counts()["customers_data_mart"] == 2


def test_password_setting_goes_into_the_url_and_never_into_its_text() -> None:
    engine = make_engine(settings_for("mysql+pymysql://app@db.example:3306/marts", SECRET))
    assert engine.url.password == SECRET
    assert engine.url.query["charset"] == "utf8mb4"
    assert engine.pool._pre_ping  # type: ignore[attr-defined]
    for text in (str(engine.url), repr(engine.url), repr(engine), str(engine)):
        assert SECRET not in text
    engine.dispose()


def test_password_setting_overrides_one_in_the_url() -> None:
    engine = make_engine(settings_for("mysql://app:old-pw@db.example/marts", SECRET))
    assert engine.url.password == SECRET
    assert engine.url.drivername == "mysql+pymysql"
    engine.dispose()


def test_an_unparseable_url_is_a_config_error_without_the_url() -> None:
    with pytest.raises(ConfigError) as info:
        make_engine(settings_for(f"not a url {SECRET}"))
    assert SECRET not in "".join(traceback.format_exception(info.value))


def test_other_databases_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unsupported"):
        make_engine(settings_for("postgresql://app@localhost/marts"))


# --- error mapping ----------------------------------------------------------------------------


def wrap(cls: type[sa.exc.DBAPIError], orig: Exception) -> sa.exc.DBAPIError:
    return cls("INSERT INTO customers_data_mart ...", None, orig)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (wrap(sa.exc.OperationalError, pymysql.err.OperationalError(2003, "refused")), True),
        (wrap(sa.exc.OperationalError, pymysql.err.OperationalError(2013, "lost")), True),
        (wrap(sa.exc.OperationalError, pymysql.err.OperationalError(1205, "lock wait")), True),
        (wrap(sa.exc.OperationalError, pymysql.err.OperationalError(1213, "deadlock")), True),
        (wrap(sa.exc.OperationalError, pymysql.err.OperationalError(1290, "read-only")), True),
        (wrap(sa.exc.InterfaceError, pymysql.err.InterfaceError(0, "")), True),
        (wrap(sa.exc.OperationalError, pymysql.err.OperationalError(1054, "column")), False),
        (wrap(sa.exc.OperationalError, pymysql.err.OperationalError(4025, "CHECK")), False),
        (wrap(sa.exc.ProgrammingError, pymysql.err.ProgrammingError(1146, "table")), False),
        (wrap(sa.exc.DataError, pymysql.err.DataError(1264, "out of range")), False),
        (wrap(sa.exc.IntegrityError, pymysql.err.IntegrityError(1048, "null")), False),
        (sa.exc.DisconnectionError("pre-ping failed"), True),
        (sa.exc.TimeoutError("pool exhausted"), True),
        (sa.exc.CompileError("bad statement"), False),
    ],
)
def test_errors_are_told_apart_by_class_and_driver_code(
    error: sa.exc.SQLAlchemyError, transient: bool
) -> None:
    assert is_transient(error) is transient
    engine = sa.create_engine(f"mysql+pymysql://app:{SECRET}@db.example/marts")
    mapped = to_salesflow_error(error, engine, "writing a flush")
    assert isinstance(mapped, DatabaseUnavailable if transient else DatabaseRejected)
    assert "db.example" in str(mapped) and SECRET not in str(mapped)


def test_a_locked_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "marts.db"
    engine = make_engine(settings_for(f"sqlite:///{path}?timeout=0.2"))
    migrate(engine)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        with pytest.raises(DatabaseUnavailable, match="writing a flush"):
            MartWriter(engine).write([a_customer()], [])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    MartWriter(engine).write([a_customer()], [])  # and it works once the lock is gone
    engine.dispose()


def test_a_missing_column_is_rejected_not_retried(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE customers_data_mart DROP COLUMN customer_segment")
    with pytest.raises(DatabaseRejected) as info:
        MartWriter(engine).write([a_customer()], [])
    assert isinstance(info.value.__cause__, sa.exc.OperationalError)  # sqlite3 says "Operational"
    assert "10.50" not in str(info.value)  # the statement's parameters stay out of messages


# --- writer API -------------------------------------------------------------------------------


def test_an_empty_write_touches_nothing(tmp_path: Path) -> None:
    # No tables at all: a write with nothing to write must not even open a transaction.
    engine = make_engine(settings_for(f"sqlite:///{tmp_path / 'empty.db'}"))
    assert MartWriter(engine).write([], []) == WriteStats()
    engine.dispose()


def test_write_stats_count_what_was_sent(engine: sa.Engine) -> None:
    stats = MartWriter(engine).write(
        [a_customer(1), a_customer(2)], [], {"store": [{"id": 121, "address": "Delhi"}]}
    )
    assert (stats.customers, stats.team, dict(stats.dimensions)) == (2, 0, {"store": 1})
    assert stats.rows == 3 and stats.seconds >= 0


def test_dimension_rows_are_checked_before_anything_is_written(engine: sa.Engine) -> None:
    writer = MartWriter(engine)
    with pytest.raises(ValueError, match="unknown dimension table"):
        writer.write([a_customer()], [], {"stores": [{"id": 1}]})
    with pytest.raises(ValueError, match="unknown column"):
        writer.write([a_customer()], [], {"store": [{"id": 1, "adress": "typo"}]})
    assert writer.row_counts()["customers_data_mart"] == 0


def test_unknown_table_names_are_refused(engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="unknown table"):
        MartWriter(engine).read_table("salesflow_schema")


def test_batch_size_must_be_positive(engine: sa.Engine) -> None:
    with pytest.raises(ValueError):
        MartWriter(engine, batch_rows=0)


# --- the builder's path: values, isolation of refused rows, the flush log -------------------


def test_values_read_back_are_the_values_written(engine: sa.Engine) -> None:
    """The mirror compares computed values with these: they must come back identical."""
    rows = [a_customer(1, total_sales=Decimal("999999999999.99")),
            a_customer(2, avg_time_between_purchases=Decimal("0.01"), inactive_status=True),
            a_customer(3, full_name=None, address=None, phone_number=None,
                       total_sales=Decimal("0.00"))]
    writer = MartWriter(engine)
    writer.apply([TableChanges("customers_data_mart", [r.values() for r in rows])])
    assert sorted(writer.read_values("customers_data_mart")) == [r.values() for r in rows]
    assert writer.read_customers() == [r.as_dict() for r in rows]


def test_a_refused_row_is_quarantined_and_every_other_row_written(engine: sa.Engine) -> None:
    writer = MartWriter(engine, batch_rows=4)
    good = [a_customer(i) for i in range(1, 11)]
    bad = a_customer(6, "2025-02", customer_segment=None)  # NOT NULL: the database refuses
    result = writer.apply([TableChanges("customers_data_mart",
                                        [r.values() for r in good[:5]] + [bad.values()]
                                        + [r.values() for r in good[5:]])])
    assert [r.key for r in result.refused] == [(6, "2025-02")]
    assert "NOT NULL" in result.refused[0].error
    assert result.written["customers_data_mart"] == 10
    assert writer.read_customers() == [r.as_dict() for r in good]
    (entry,) = writer.quarantined()
    assert (entry["mart"], entry["row_key"]) == ("customers_data_mart", '[6, "2025-02"]')
    assert '"customer_segment": null' in entry["row_values"] and "NOT NULL" in entry["error"]
    assert writer.last_run("flush")["customer_rows"] == 10
    # once a later flush writes that key, its quarantine entry goes in the same transaction
    writer.apply([TableChanges("customers_data_mart", [a_customer(6, "2025-02").values()],
                               released=[(6, "2025-02")])])
    assert writer.quarantined() == []


def test_a_plain_write_stays_all_or_nothing(engine: sa.Engine) -> None:
    writer = MartWriter(engine)
    with pytest.raises(DatabaseRejected):
        writer.write([a_customer(1), a_customer(2, customer_segment=None)], [])
    assert writer.read_customers() == [] and writer.quarantined() == []


def test_a_cancelled_apply_writes_nothing(engine: sa.Engine) -> None:
    from mart_builder.cancel import Cancelled

    writer = MartWriter(engine, batch_rows=2)
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 2  # after two statements

    with pytest.raises(Cancelled):
        writer.apply([TableChanges("customers_data_mart",
                                   [a_customer(i).values() for i in range(1, 9)])],
                     cancelled=cancelled)
    assert writer.read_customers() == [] and writer.last_run("flush") is None


def test_a_failed_flush_is_logged_for_status(engine: sa.Engine) -> None:
    writer = MartWriter(engine)
    writer.record_failure("mart database sqlite:///x: writing a flush failed: boom")
    failure = writer.last_run("failure")
    assert failure["error"].endswith("boom") and writer.last_run("flush") is None


def test_the_flush_log_is_pruned_but_keeps_the_newest_of_each_kind(engine: sa.Engine) -> None:
    writer = MartWriter(engine)
    writer.record_failure("old failure")
    for _ in range(30):
        writer.apply([])
    writer.prune_log(keep=5)
    with engine.connect() as conn:
        kinds = conn.exec_driver_sql("SELECT kind FROM salesflow_flush_log").scalars().all()
    assert sorted(kinds) == ["failure"] + ["flush"] * 5


def test_mysql_rows_are_rendered_as_exact_safe_literals() -> None:
    from mart_builder.writer import row_renderer

    render = row_renderer(customers_data_mart)
    row = a_customer(7, full_name="O'Brien \\ \"Jr\"\n😀", total_sales=Decimal("-1234567.89"),
                     customer_lifetime_value=Decimal("999999999999.99"),
                     monetary_value=Decimal("0.05"), avg_time_between_purchases=None,
                     inactive_status=True).values()
    assert render(row) == (
        "(7,'O\\'Brien \\\\ \\\"Jr\\\"\\n😀','Delhi, 110011','9100000001','2025-01',"
        "-1234567.89,999999999999.99,'2025-01','2025-01',1,0.05,10.50,10.50,NULL,1,"
        "'Occasional')")
    with pytest.raises(ValueError):  # a number column never takes text
        render((*row[:9], "1); DROP TABLE x; --", *row[10:]))
    with pytest.raises(TypeError):  # nor a text column anything but text
        render((*row[:1], 5, *row[2:]))
