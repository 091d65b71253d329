"""The mart database layer against the real MariaDB (the `mysql_url` fixture) and SQLite.

Every test but the connection ones runs on both databases with the same assertions; each gets
empty tables (MariaDB: the session's database, emptied; SQLite: a new file).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from mart_builder.db import make_engine
from mart_builder.metrics import (
    CUSTOMER_KEY,
    TEAM_KEY,
    CustomerMartRow,
    MartRules,
    TeamMartRow,
    aggregate,
    customer_rows,
    data_as_of,
    team_rows,
)
from mart_builder.schema import SCHEMA_VERSION, customers_data_mart, migrate, salesflow_schema
from mart_builder.writer import MartWriter
from salesflow.errors import DatabaseRejected, DatabaseUnavailable
from salesflow.settings import Settings
from tests.marts_expected import (
    DATA_DIR,
    assert_marts_equal,
    load_customers,
    load_expected_customers,
    load_expected_team,
    load_sales_people,
    load_valid_sales,
    read_csv,
)

pytestmark = pytest.mark.integration

D = Decimal


def settings_for(url: str, password: str | None = None) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        mart_db_url=url,
        mart_db_password=SecretStr(password) if password else None,
    )


def drop_all_tables(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for name in sa.inspect(conn).get_table_names():
            conn.exec_driver_sql(f"DROP TABLE {engine.dialect.identifier_preparer.quote(name)}")


@pytest.fixture(params=["sqlite", "mariadb"])
def bare_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """An engine on an empty database (no tables)."""
    if request.param == "mariadb":
        url = request.getfixturevalue("mysql_url")
    else:
        url = f"sqlite:///{tmp_path / 'marts.db'}"
    engine = make_engine(settings_for(url))
    drop_all_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(bare_engine: sa.Engine) -> sa.Engine:
    migrate(bare_engine)
    return bare_engine


@pytest.fixture
def writer(engine: sa.Engine) -> MartWriter:
    return MartWriter(engine)


@pytest.fixture(scope="module")
def example_marts() -> tuple[list[CustomerMartRow], list[TeamMartRow]]:
    caggs, taggs = aggregate(load_valid_sales())
    rules = MartRules()
    return (
        customer_rows(caggs.values(), load_customers(), rules, data_as_of(caggs.values())),
        team_rows(taggs.values(), load_sales_people(), rules),
    )


def a_customer(customer_id: int = 1, month: str = "2025-01", **changes) -> CustomerMartRow:
    values = dict(
        customer_id=customer_id, full_name="Asha Rao", address="Delhi, 110011",
        phone_number="9100000001", sales_date_month=month, total_sales=D("10.50"),
        customer_lifetime_value=D("10.50"), first_purchase_month=month,
        last_purchase_month=month, purchase_frequency=1, monetary_value=D("10.50"),
        avg_monthly_spending=D("10.50"), max_single_transaction=D("10.50"),
        avg_time_between_purchases=None, inactive_status=False, customer_segment="Occasional",
    )
    return CustomerMartRow(**(values | changes))


def a_team_row(store: int = 121, person: int = 1, month: str = "2025-01", **changes) -> TeamMartRow:
    values = dict(
        store_id=store, sales_person_id=person, full_name="Rahul Verma", sales_month=month,
        total_sales=D("100.00"), avg_sales_per_month=D("100.00"), incentive=D("1.00"),
        sales_growth_rate=None, top_performance_rank=1, year_to_date_sales=D("100.00"),
        month_over_month_variance=D("100.00"), first_sale_month=month, last_sale_month=month,
        total_transactions=1, avg_transaction_value=D("100.00"),
        max_single_transaction=D("100.00"), sales_contribution_percentage=D("100.00"),
    )
    return TeamMartRow(**(values | changes))


def customers_dicts(rows: list[CustomerMartRow]) -> list[dict]:
    return [r.as_dict() for r in rows]


# --- round trips ------------------------------------------------------------------------------


def test_the_worked_examples_round_trip_exactly(writer: MartWriter, example_marts) -> None:
    customers, team = example_marts
    stats = writer.write(customers, team)
    assert (stats.customers, stats.team) == (len(customers), len(team))
    assert_marts_equal(writer.read_customers(), load_expected_customers(), CUSTOMER_KEY)
    assert_marts_equal(writer.read_team(), load_expected_team(), TEAM_KEY)
    # and typed exactly like the rows that went in, not merely equal after normalising
    assert writer.read_customers() == customers_dicts(customers)
    assert writer.read_team() == [r.as_dict() for r in team]


def test_edge_values_keep_their_type_and_value(writer: MartWriter) -> None:
    rows = [
        a_customer(1, full_name="Zoë Ñandú 😀 O'Brien, \"Jr\"", address="Straße 1,\n10115",
                   customer_lifetime_value=D("999999999999.99"), inactive_status=True,
                   avg_time_between_purchases=D("0.01")),
        a_customer(2, full_name=None, address=None, phone_number=None, total_sales=D("0.00")),
    ]
    team = [a_team_row(month_over_month_variance=D("-1234567.89"), sales_growth_rate=D("-50.00"),
                       sales_contribution_percentage=None, incentive=D("0.00"))]
    writer.write(rows, team)
    got = writer.read_customers()
    assert got == customers_dicts(rows)
    assert got[0]["inactive_status"] is True and got[1]["inactive_status"] is False
    assert got[0]["customer_lifetime_value"] == D("999999999999.99")
    assert str(got[0]["avg_time_between_purchases"]) == "0.01"
    assert got[1]["full_name"] is None and got[1]["avg_time_between_purchases"] is None
    assert writer.read_team() == [team[0].as_dict()]


def test_dimension_records_are_upserted_by_key(writer: MartWriter) -> None:
    products = [
        {"id": int(r["id"]), "name": r["name"], "current_price": D(r["current_price"]),
         "old_price": D(r["old_price"]), "created_date": date.fromisoformat(r["created_date"]),
         "updated_date": None, "expiry_date": date.fromisoformat(r["expiry_date"])}
        for r in read_csv(DATA_DIR / "product.csv")
    ]
    stores = [{"id": 121, "address": "Delhi", "reviews": "Excellent selection, of products."}]
    writer.write([], [], {"product": products, "store": stores})
    assert writer.read_table("product") == products
    changed = products[0] | {"current_price": D("230.00"), "updated_date": date(2025, 6, 1)}
    writer.write([], [], {"product": [changed]})
    assert writer.read_table("product") == [changed, *products[1:]]
    assert writer.read_table("store")[0]["store_pincode"] is None  # whole record: absent -> NULL
    counts = writer.row_counts()
    assert (counts["product"], counts["store"], counts["customer"]) == (len(products), 1, 0)


# --- upserts ----------------------------------------------------------------------------------


def test_writing_the_same_rows_twice_changes_nothing(writer: MartWriter, example_marts) -> None:
    writer.write(*example_marts)
    before = (writer.read_customers(), writer.read_team(), writer.row_counts())
    writer.write(*example_marts)
    assert (writer.read_customers(), writer.read_team(), writer.row_counts()) == before


def test_changed_rows_are_updated_and_others_left_alone(writer: MartWriter) -> None:
    writer.write([a_customer(1), a_customer(2), a_customer(3)], [a_team_row(person=1)])
    restated = a_customer(2, total_sales=D("20.00"), purchase_frequency=2,
                          avg_time_between_purchases=D("3.50"), customer_segment="Regular")
    writer.write([restated, a_customer(4)], [a_team_row(person=1, top_performance_rank=2)])
    assert writer.read_customers() == customers_dicts(
        [a_customer(1), restated, a_customer(3), a_customer(4)])
    assert writer.read_team()[0]["top_performance_rank"] == 2
    # a value going back to NULL is written too (whole rows, absolute values)
    writer.write([dataclasses.replace(restated, avg_time_between_purchases=None)], [])
    assert writer.read_customers()[1]["avg_time_between_purchases"] is None


def test_a_failed_flush_leaves_the_previous_flush_intact(engine: sa.Engine) -> None:
    writer = MartWriter(engine, batch_rows=2)  # several statements, so the failure is mid-way
    first = [a_customer(i) for i in range(1, 6)]
    writer.write(first, [a_team_row()])
    second = [dataclasses.replace(r, total_sales=D("99.99")) for r in first]
    second.append(a_customer(6, customer_segment=None))  # breaks NOT NULL in the last batch
    with pytest.raises(DatabaseRejected, match="writing a flush"):
        writer.write(second, [a_team_row(total_sales=D("1.00"))])
    assert writer.read_customers() == customers_dicts(first)
    assert writer.read_team() == [a_team_row().as_dict()]


def test_a_column_dropped_under_us_is_rejected_then_migrate_repairs(engine: sa.Engine) -> None:
    writer = MartWriter(engine)
    writer.write([a_customer(1)], [])
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE customers_data_mart DROP COLUMN customer_segment")
    with pytest.raises(DatabaseRejected):  # PyMySQL/sqlite3 raise OperationalError for this
        writer.write([a_customer(1, total_sales=D("5.00")), a_customer(2)], [])
    c = customers_data_mart.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(c.customer_id, c.total_sales)).all()
    assert [tuple(r) for r in rows] == [(1, D("10.50"))]
    migrate(engine)  # the column is back (nullable); the next flush fills it
    writer.write([a_customer(1)], [])
    assert writer.read_customers() == customers_dicts([a_customer(1)])


# --- the rebuild ------------------------------------------------------------------------------


def test_replace_all_replaces_both_marts(writer: MartWriter, example_marts) -> None:
    writer.write([a_customer(999_999, "2001-01")], [a_team_row(store=999, person=999)])
    customers, team = example_marts
    writer.replace_all(customers, team)
    assert_marts_equal(writer.read_customers(), load_expected_customers(), CUSTOMER_KEY)
    assert_marts_equal(writer.read_team(), load_expected_team(), TEAM_KEY)
    smaller = [r for r in customers if r.customer_id != customers[0].customer_id]
    writer.replace_all(smaller, team[:1])
    assert writer.read_customers() == customers_dicts(smaller)
    assert writer.read_team() == [team[0].as_dict()]
    writer.write([a_customer(7)], [])  # the swapped-in tables take flushes as before
    assert writer.row_counts()["customers_data_mart"] == len(smaller) + 1


def test_a_failed_rebuild_leaves_the_old_marts(writer: MartWriter, engine: sa.Engine) -> None:
    writer.write([a_customer(1)], [a_team_row()])
    with pytest.raises(DatabaseRejected):
        writer.replace_all([a_customer(2), a_customer(2)], [])  # a duplicate key
    assert writer.read_customers() == customers_dicts([a_customer(1)])
    assert writer.read_team() == [a_team_row().as_dict()]
    with engine.connect() as conn:  # no staging tables left behind
        assert not [n for n in sa.inspect(conn).get_table_names() if "__" in n]


def test_readers_see_the_old_or_the_new_marts_never_a_mix(writer: MartWriter) -> None:
    old = [a_customer(i) for i in range(3000)], [a_team_row(person=p) for p in range(50)]
    new = [a_customer(i, "2025-02") for i in range(2000)], [a_team_row(person=p) for p in range(70)]
    writer.replace_all(*old)
    valid = {(len(old[0]), len(old[1])), (len(new[0]), len(new[1]))}
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                counts = writer.row_counts()
            except DatabaseUnavailable as exc:  # e.g. a lock wait; never a wrong answer
                errors.append(exc)
                continue
            seen.append((counts["customers_data_mart"], counts["sales_team_data_mart"]))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for state in (new, old, new, old, new):
            writer.replace_all(*state)
    finally:
        stop.set()
        reader.join(30)
    print(f"\n{writer.engine.dialect.name}: reader saw {Counter(seen)}, {len(errors)} errors")
    assert seen and set(seen) <= valid, set(seen) - valid
    assert len(errors) < len(seen)


# --- migration --------------------------------------------------------------------------------


def test_migrate_adds_a_missing_column_without_losing_rows(bare_engine: sa.Engine) -> None:
    old_release = sa.MetaData()
    old_table = sa.Table(
        "customers_data_mart", old_release,
        *(sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
          for c in customers_data_mart.columns if c.name != "customer_segment"),
        mysql_charset="utf8mb4",
    )
    old_rows = [
        {k: v for k, v in a_customer(i).as_dict().items() if k != "customer_segment"}
        for i in (1, 2, 3)
    ]
    with bare_engine.begin() as conn:
        old_release.create_all(conn)
        conn.execute(old_table.insert(), old_rows)

    assert migrate(bare_engine) == SCHEMA_VERSION
    with bare_engine.connect() as conn:
        columns = [c["name"] for c in sa.inspect(conn).get_columns("customers_data_mart")]
        assert columns[-1] == "customer_segment"
        assert conn.execute(sa.select(salesflow_schema.c.version)).scalar_one() == SCHEMA_VERSION
    writer = MartWriter(bare_engine)
    assert writer.read_customers() == [r | {"customer_segment": None} for r in old_rows]
    writer.write([a_customer(2)], [])  # the next flush fills the new column
    assert [r["customer_segment"] for r in writer.read_customers()] == [None, "Occasional", None]
    assert migrate(bare_engine) == SCHEMA_VERSION  # and a second run changes nothing
    assert writer.row_counts()["customers_data_mart"] == 3


def test_migrate_refuses_a_table_with_another_primary_key(bare_engine: sa.Engine) -> None:
    with bare_engine.begin() as conn:  # the seed's own table: no primary key at all
        conn.exec_driver_sql(
            "CREATE TABLE customers_data_mart (customer_id INT, full_name VARCHAR(100),"
            " sales_date_month VARCHAR(7), total_sales DECIMAL(10, 2))"
        )
        conn.exec_driver_sql(
            "INSERT INTO customers_data_mart VALUES (1, 'Asha Rao', '2025-01', 10.50)"
        )
    with pytest.raises(DatabaseRejected, match="primary key"):
        migrate(bare_engine)
    with bare_engine.connect() as conn:  # untouched
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM customers_data_mart").scalar() == 1


def test_migrate_refuses_a_database_of_a_newer_release(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(salesflow_schema.update().values(version=SCHEMA_VERSION + 1))
    with pytest.raises(DatabaseRejected, match="newer"):
        migrate(engine)


# --- performance ------------------------------------------------------------------------------


def test_100k_customer_rows_write_in_seconds(writer: MartWriter) -> None:
    rows = [a_customer(i, f"2025-{i % 12 + 1:02d}") for i in range(100_000)]
    first = writer.write(rows, [])
    again = writer.write(rows, [])  # every row an update now
    rebuilt = writer.replace_all(rows, [])
    dialect = writer.engine.dialect.name
    print(f"\n{dialect}: 100k rows insert {first.seconds:.2f}s, upsert {again.seconds:.2f}s, "
          f"replace_all {rebuilt.seconds:.2f}s")
    assert writer.row_counts()["customers_data_mart"] == 100_000
    assert max(first.seconds, again.seconds, rebuilt.seconds) < 60


# --- connecting -------------------------------------------------------------------------------


def test_an_unreachable_server_fails_fast_and_never_shows_the_password() -> None:
    secrets = ("url-pw-7f3a", "setting-pw-9c1d")
    engine = make_engine(settings_for(
        f"mysql+pymysql://salesflow:{secrets[0]}@127.0.0.1:1/salesflow", secrets[1]))
    for attempt in (lambda: MartWriter(engine).write([a_customer()], []),
                    lambda: migrate(engine)):
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as info:
            attempt()
        assert time.monotonic() - started < 10
        text = "".join(traceback.format_exception(info.value))  # the whole chain
        assert "127.0.0.1:1" in str(info.value)
        for secret in secrets:
            assert secret not in text
    for text in (str(engine.url), repr(engine.url), repr(engine)):
        assert not any(secret in text for secret in secrets)
    engine.dispose()


def test_a_wrong_password_is_refused_without_showing_it(mysql_url: str) -> None:
    secret = "wrong-pw-4e2b"
    engine = make_engine(settings_for(mysql_url, secret))  # root has no password
    with pytest.raises(DatabaseUnavailable) as info:
        MartWriter(engine).row_counts()
    assert secret not in "".join(traceback.format_exception(info.value))
    engine.dispose()


def test_a_database_that_does_not_exist_is_rejected(mysql_server_url: str) -> None:
    engine = make_engine(settings_for(f"{mysql_server_url}/salesflow_no_such_db"))
    with pytest.raises(DatabaseRejected, match="salesflow_no_such_db"):
        migrate(engine)
    engine.dispose()
