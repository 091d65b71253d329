"""The mart database's tables, and `migrate()`, which brings an existing database up to them.

Column names and order follow the seed (`CUSTOMER_COLUMNS` / `TEAM_COLUMNS`); primary keys
are the marts' keys from `metrics.md`, so a flush can upsert whole rows. Money, averages,
percentages and days are DECIMAL(14,2) (the seed's DECIMAL(10,2) overflows at scale).

Migration is deliberately small: create what is missing, add columns that a newer release
declares (nullable, so existing rows survive), record `SCHEMA_VERSION`. Anything that cannot
be done in place (a different primary key, a database written by a newer release) is refused
with `DatabaseRejected` rather than guessed at.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mart_builder.db import translate_errors
from mart_builder.metrics import CUSTOMER_COLUMNS, CUSTOMER_KEY, TEAM_COLUMNS, TEAM_KEY
from salesflow.errors import DatabaseRejected

SCHEMA_VERSION = 3  # 2: salesflow_quarantine, salesflow_flush_log.error; 3: sales_anomalies

metadata = sa.MetaData()

# InnoDB for transactions; utf8mb4 so any Unicode name or address fits. Ignored by SQLite.
_MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def _money(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Numeric(14, 2), nullable=nullable)


def _month(name: str, primary_key: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(7), primary_key=primary_key, nullable=False)


# Derived text (`first + ' ' + last`, `address + ', ' + pincode`) joins two 255-character
# dimension fields, so it gets room for both: a long address must never fail a flush.
_DERIVED_TEXT = sa.String(512)

customers_data_mart = sa.Table(
    "customers_data_mart",
    metadata,
    sa.Column("customer_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("full_name", _DERIVED_TEXT),
    sa.Column("address", _DERIVED_TEXT),
    sa.Column("phone_number", sa.String(255)),
    _month("sales_date_month", primary_key=True),
    _money("total_sales"),
    _money("customer_lifetime_value"),
    _month("first_purchase_month"),
    _month("last_purchase_month"),
    sa.Column("purchase_frequency", sa.BigInteger, nullable=False),
    _money("monetary_value"),
    _money("avg_monthly_spending"),
    _money("max_single_transaction"),
    _money("avg_time_between_purchases", nullable=True),
    sa.Column("inactive_status", sa.Boolean, nullable=False),
    sa.Column("customer_segment", sa.String(50), nullable=False),
    **_MYSQL,
)

sales_team_data_mart = sa.Table(
    "sales_team_data_mart",
    metadata,
    sa.Column("store_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sales_person_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("full_name", _DERIVED_TEXT),
    _month("sales_month", primary_key=True),
    _money("total_sales"),
    _money("avg_sales_per_month"),
    _money("incentive"),
    _money("sales_growth_rate", nullable=True),
    sa.Column("top_performance_rank", sa.Integer, nullable=False),
    _money("year_to_date_sales"),
    _money("month_over_month_variance"),
    _month("first_sale_month"),
    _month("last_sale_month"),
    sa.Column("total_transactions", sa.BigInteger, nullable=False),
    _money("avg_transaction_value"),
    _money("max_single_transaction"),
    _money("sales_contribution_percentage", nullable=True),
    **_MYSQL,
)

sales_anomalies = sa.Table(
    # anomalies.md: one row per (rule, entity) currently flagged, restated like the marts
    "sales_anomalies",
    metadata,
    sa.Column("rule", sa.String(32), primary_key=True),
    sa.Column("entity", sa.String(300), primary_key=True),  # "sale:" + a 255-character id
    sa.Column("customer_id", sa.Integer),
    sa.Column("store_id", sa.Integer),
    sa.Column("sales_person_id", sa.Integer),
    sa.Column("sale_id", sa.String(255)),
    sa.Column("period", sa.String(10), nullable=False),
    _money("observed"),
    _money("expected"),
    # when the flush that first wrote the row ran, UTC; kept when the row is restated
    sa.Column("first_flagged_at", sa.DateTime, nullable=False, comment="UTC"),
    **_MYSQL,
)

# --- the seed's dimension tables (data-contract.md "Input files"), latest version per key ---

customer = sa.Table(
    "customer",
    metadata,
    sa.Column("customer_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("first_name", sa.String(255)),
    sa.Column("last_name", sa.String(255)),
    sa.Column("address", sa.String(255)),
    sa.Column("pincode", sa.String(255)),
    sa.Column("phone_number", sa.String(255)),
    sa.Column("customer_joining_date", sa.Date),
    **_MYSQL,
)

store = sa.Table(
    "store",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("address", sa.String(255)),
    sa.Column("store_pincode", sa.String(255)),
    sa.Column("store_manager_name", sa.String(255)),
    sa.Column("store_opening_date", sa.Date),
    sa.Column("reviews", sa.Text),
    **_MYSQL,
)

product = sa.Table(
    "product",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(255)),
    _money("current_price", nullable=True),
    _money("old_price", nullable=True),
    sa.Column("created_date", sa.Date),
    sa.Column("updated_date", sa.Date),
    sa.Column("expiry_date", sa.Date),
    **_MYSQL,
)

sales_team = sa.Table(
    "sales_team",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("first_name", sa.String(255)),
    sa.Column("last_name", sa.String(255)),
    sa.Column("manager_id", sa.Integer),
    sa.Column("is_manager", sa.String(8)),
    sa.Column("address", sa.String(255)),
    sa.Column("pincode", sa.String(255)),
    sa.Column("joining_date", sa.Date),
    **_MYSQL,
)

salesflow_schema = sa.Table(
    "salesflow_schema",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),  # always 1
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("migrated_at", sa.DateTime, nullable=False, comment="UTC"),
    **_MYSQL,
)

salesflow_flush_log = sa.Table(
    # one row per successful flush or rebuild, and per failed flush ("failure", with its
    # error: the database's or Kafka's message, never a secret), for `salesflow status`
    "salesflow_flush_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # "flush", "rebuild" or "failure"
    sa.Column("finished_at", sa.DateTime, nullable=False, comment="UTC"),
    sa.Column("duration_seconds", sa.Float, nullable=False),
    sa.Column("customer_rows", sa.Integer, nullable=False),
    sa.Column("team_rows", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    **_MYSQL,
)

salesflow_quarantine = sa.Table(
    # Mart rows the database refused (a value the column cannot hold): every other row of
    # the flush was written; these wait here with the database's error until a later flush
    # writes their key (then the entry goes) or a rebuild refuses them again.
    "salesflow_quarantine",
    metadata,
    sa.Column("mart", sa.String(64), primary_key=True),
    sa.Column("row_key", sa.String(255), primary_key=True),  # JSON array of the key's values
    sa.Column("row_values", sa.Text, nullable=False),  # JSON object: the refused row
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("refused_at", sa.DateTime, nullable=False),
    **_MYSQL,
)

# Secondary indexes for the usual filters: a month of either mart, a store's months. (A
# store's rows are also reached through the team mart's primary key, which starts with
# store_id; a customer's through the customers mart's.) `migrate()` adds missing ones.
sa.Index("ix_customers_data_mart_month", customers_data_mart.c.sales_date_month)
sa.Index("ix_sales_team_data_mart_month_store", sales_team_data_mart.c.sales_month,
         sales_team_data_mart.c.store_id)
sa.Index("ix_sales_anomalies_first_flagged_at", sales_anomalies.c.first_flagged_at)
sa.Index("ix_salesflow_flush_log_kind_finished", salesflow_flush_log.c.kind,
         salesflow_flush_log.c.finished_at)
# Flush log rows (one per flush: 8,640 a day at 10 s) older than this are deleted.
FLUSH_LOG_KEEP_DAYS = 7

MART_TABLES: dict[str, sa.Table] = {
    t.name: t for t in (customers_data_mart, sales_team_data_mart, sales_anomalies)
}
DIMENSION_TABLES: dict[str, sa.Table] = {t.name: t for t in (customer, store, product, sales_team)}

for _table, _columns, _key in (
    (customers_data_mart, CUSTOMER_COLUMNS, CUSTOMER_KEY),
    (sales_team_data_mart, TEAM_COLUMNS, TEAM_KEY),
):  # the metric math and the tables must never drift apart
    if tuple(_table.columns.keys()) != _columns or tuple(_table.primary_key.columns.keys()) != _key:
        raise RuntimeError(f"{_table.name} does not match mart_builder.metrics")


# --- migration --------------------------------------------------------------------------------


def migrate(engine: Engine) -> int:
    """Create missing tables, add missing columns, record the version; returns it.

    Safe to run on every start: on an up-to-date database it changes nothing. Raises
    `DatabaseRejected` for a database it cannot write to safely, `DatabaseUnavailable`
    when the server does not answer.
    """
    with translate_errors(engine, "migrating the mart schema"), engine.begin() as conn:
        found = _recorded_version(conn)
        if found is not None and found > SCHEMA_VERSION:
            raise DatabaseRejected(
                f"the mart database has schema version {found}, newer than this "
                f"release's {SCHEMA_VERSION}: upgrade salesflow instead"
            )
        metadata.create_all(conn)
        for table in metadata.sorted_tables:
            _check_primary_key(conn, table)
            _add_missing_columns(conn, table)
            _add_missing_indexes(conn, table)
        _record_version(conn)
    return SCHEMA_VERSION


def _recorded_version(conn: Connection) -> int | None:
    if not sa.inspect(conn).has_table(salesflow_schema.name):
        return None
    return conn.execute(sa.select(sa.func.max(salesflow_schema.c.version))).scalar()


def _check_primary_key(conn: Connection, table: sa.Table) -> None:
    """Upserts are keyed by the primary key: a table with another one can't be written."""
    found = sa.inspect(conn).get_pk_constraint(table.name)["constrained_columns"]
    wanted = list(table.primary_key.columns.keys())
    if sorted(found) != sorted(wanted):
        raise DatabaseRejected(
            f"table {table.name} has primary key {tuple(found)}, expected {tuple(wanted)}; "
            "it cannot be migrated in place (rename or drop it, then rebuild the marts)"
        )


def _add_missing_columns(conn: Connection, table: sa.Table) -> list[str]:
    present = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
    missing = [c for c in table.columns if c.name not in present]
    for column in missing:
        conn.execute(sa.text(_add_column_ddl(conn.dialect, table, column)))
    return [c.name for c in missing]


def _add_missing_indexes(conn: Connection, table: sa.Table) -> list[str]:
    present = {i["name"] for i in sa.inspect(conn).get_indexes(table.name)}
    missing = [i for i in table.indexes if i.name not in present]
    for index in missing:
        index.create(conn)
    return [str(i.name) for i in missing]


def _add_column_ddl(dialect: sa.Dialect, table: sa.Table, column: sa.Column) -> str:
    """`ALTER TABLE .. ADD COLUMN`, always nullable: existing rows have no value for it yet."""
    quote = dialect.identifier_preparer.quote
    return (
        f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} "
        f"{column.type.compile(dialect=dialect)} NULL"
    )


def _record_version(conn: Connection) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    updated = conn.execute(
        salesflow_schema.update()
        .where(salesflow_schema.c.id == 1)
        .values(version=SCHEMA_VERSION, migrated_at=now)
    ).rowcount
    if not updated:
        conn.execute(
            salesflow_schema.insert().values(id=1, version=SCHEMA_VERSION, migrated_at=now)
        )

