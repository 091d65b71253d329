"""All SQL that writes the marts: one transaction per flush, upserts keyed by primary key.

A flush carries whole rows with absolute values (see `metrics.md`, "Restatement"), so an
upsert is the whole write: writing the same state twice changes nothing, and a failed flush
rolls back to exactly the previous one. Rows go to the server in batches of `batch_rows`
per executemany; PyMySQL folds each batch into multi-row INSERTs, sqlite3 reuses one
prepared statement.

Errors leave as `DatabaseUnavailable` (transient: retry the flush, don't commit offsets) or
`DatabaseRejected` (permanent), see `mart_builder.db`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Connection, Engine

from mart_builder.db import translate_errors
from mart_builder.metrics import CustomerMartRow, TeamMartRow
from mart_builder.schema import (
    DIMENSION_TABLES,
    FLUSH_LOG_KEEP_DAYS,
    MART_TABLES,
    customers_data_mart,
    sales_team_data_mart,
    salesflow_flush_log,
)
from salesflow.errors import ConfigError

BATCH_ROWS = 5000

Row = Mapping[str, Any]
DimensionRows = Mapping[str, Sequence[Row]]
"""Dimension table name (`customer`, `store`, `product`, `sales_team`) -> whole records."""


@dataclass(frozen=True, slots=True)
class WriteStats:
    """What one write sent: rows per table and how long the transaction took."""

    customers: int = 0
    team: int = 0
    dimensions: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return self.customers + self.team + sum(self.dimensions.values())


class MartWriter:
    """Writes and reads the marts (and the dimension tables) of one database.

    The tables must exist: run `mart_builder.schema.migrate(engine)` once at start-up.
    """

    def __init__(self, engine: Engine, batch_rows: int = BATCH_ROWS) -> None:
        backend = engine.dialect.name
        if backend not in ("mysql", "mariadb", "sqlite"):
            raise ConfigError(f"no mart writer for {backend!r}: use MySQL/MariaDB or SQLite")
        if batch_rows < 1:
            raise ValueError("batch_rows must be >= 1")
        self.engine = engine
        self.batch_rows = batch_rows
        self._mysql = backend != "sqlite"
        self._upserts = {
            name: self._upsert(table)
            for name, table in (MART_TABLES | DIMENSION_TABLES).items()
        }

    # --- writing ------------------------------------------------------------------------------

    def write(
        self,
        customers: Sequence[CustomerMartRow],
        team: Sequence[TeamMartRow],
        dims: DimensionRows | None = None,
        log: bool = False,
    ) -> WriteStats:
        """Upsert whole rows of both marts (and dimension records) in ONE transaction;
        with `log`, the flush is recorded in `salesflow_flush_log` in that transaction."""
        dim_rows = _dimension_rows(dims or {})
        if not customers and not team and not any(dim_rows.values()) and not log:
            return WriteStats(dimensions={name: 0 for name in dim_rows})
        started = time.perf_counter()
        with translate_errors(self.engine, "writing a flush"), self.engine.begin() as conn:
            for name, rows in dim_rows.items():
                self._execute(conn, self._upserts[name], rows)
            self._execute(conn, self._upserts[customers_data_mart.name], map(_as_row, customers))
            self._execute(conn, self._upserts[sales_team_data_mart.name], map(_as_row, team))
            if log:
                _log(conn, "flush", started, len(customers), len(team))
        return WriteStats(
            customers=len(customers),
            team=len(team),
            dimensions={name: len(rows) for name, rows in dim_rows.items()},
            seconds=time.perf_counter() - started,
        )

    def replace_all(
        self, customers: Sequence[CustomerMartRow], team: Sequence[TeamMartRow]
    ) -> WriteStats:
        """Make both marts hold exactly these rows, atomically (for the on-demand rebuild).

        A reader sees the old marts or the new ones, never a mix; keys absent from the new
        set disappear. SQLite: delete + insert in one transaction. MySQL: fill staging tables,
        then swap all four names in one `RENAME TABLE` (a huge DELETE would bloat the undo
        log). Writes of the live marts made during a MySQL rebuild are replaced by it, so
        pause flushes while rebuilding.
        """
        started = time.perf_counter()
        with translate_errors(self.engine, "replacing the marts"):
            if self._mysql:
                self._replace_by_rename(customers, team)
            else:
                self._replace_in_transaction(customers, team)
            with self.engine.begin() as conn:
                _log(conn, "rebuild", started, len(customers), len(team))
        return WriteStats(
            customers=len(customers), team=len(team), seconds=time.perf_counter() - started
        )

    def _replace_in_transaction(
        self, customers: Sequence[CustomerMartRow], team: Sequence[TeamMartRow]
    ) -> None:
        with self.engine.begin() as conn:
            for table in MART_TABLES.values():
                conn.execute(table.delete())
            self._execute(conn, customers_data_mart.insert(), map(_as_row, customers))
            self._execute(conn, sales_team_data_mart.insert(), map(_as_row, team))

    def _replace_by_rename(
        self, customers: Sequence[CustomerMartRow], team: Sequence[TeamMartRow]
    ) -> None:
        quote = self.engine.dialect.identifier_preparer.quote
        live = list(MART_TABLES)
        new = {name: f"{name}__new" for name in live}
        old = {name: f"{name}__old" for name in live}
        leftovers = ", ".join(quote(n) for n in [*new.values(), *old.values()])
        with self.engine.connect() as conn:  # DDL commits implicitly on MySQL
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {leftovers}")
            for name in live:  # LIKE: the live definition, including migrated columns
                conn.exec_driver_sql(f"CREATE TABLE {quote(new[name])} LIKE {quote(name)}")
        try:
            with self.engine.begin() as conn:
                for name, rows in ((live[0], customers), (live[1], team)):
                    staging = MART_TABLES[name].to_metadata(sa.MetaData(), name=new[name])
                    self._execute(conn, staging.insert(), map(_as_row, rows))
            swap = ", ".join(
                f"{quote(n)} TO {quote(old[n])}, {quote(new[n])} TO {quote(n)}" for n in live
            )
            with self.engine.begin() as conn:
                # A long flush holding the live tables must not stall us (and every reader
                # queued behind us) for the server's default of a day.
                conn.exec_driver_sql("SET SESSION lock_wait_timeout = 60")
                conn.exec_driver_sql(f"RENAME TABLE {swap}")
        finally:
            with contextlib.suppress(sa.exc.SQLAlchemyError), self.engine.connect() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {leftovers}")

    def _upsert(self, table: sa.Table) -> sa.Insert:
        key = list(table.primary_key.columns)
        values = [c.name for c in table.columns if not c.primary_key]
        if self._mysql:
            stmt = mysql.insert(table)
            return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in values})
        stmt = sqlite.insert(table)
        return stmt.on_conflict_do_update(
            index_elements=key, set_={c: stmt.excluded[c] for c in values}
        )

    def _execute(self, conn: Connection, stmt: sa.Executable, rows: Iterable[Row]) -> None:
        for batch in _batches(rows, self.batch_rows):
            conn.execute(stmt, batch)

    # --- reading (tests, status, the demo summary) -------------------------------------------

    def read_customers(self) -> list[dict[str, Any]]:
        return self.read_table(customers_data_mart.name)

    def read_team(self) -> list[dict[str, Any]]:
        return self.read_table(sales_team_data_mart.name)

    def read_table(self, name: str) -> list[dict[str, Any]]:
        """Every row of one mart or dimension table, as dicts ordered by primary key."""
        table = _table(name)
        query = sa.select(table).order_by(*table.primary_key.columns)
        with translate_errors(self.engine, f"reading {name}"), self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def last_run(self, kind: str) -> dict[str, Any] | None:
        """The latest `salesflow_flush_log` row of a kind ("flush" or "rebuild"), if any."""
        log = salesflow_flush_log
        query = sa.select(log).where(log.c.kind == kind).order_by(log.c.id.desc()).limit(1)
        with translate_errors(self.engine, "reading the flush log"), self.engine.connect() as c:
            row = c.execute(query).first()
        return dict(row._mapping) if row else None

    def row_counts(self) -> dict[str, int]:
        """Rows per mart and dimension table, all counted in one transaction (one snapshot)."""
        tables = [*MART_TABLES.values(), *DIMENSION_TABLES.values()]
        with translate_errors(self.engine, "counting rows"), self.engine.connect() as conn:
            return {
                t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in tables
            }


def _log(conn: Connection, kind: str, started: float, customers: int, team: int) -> None:
    """One row per flush or rebuild, `finished_at` in UTC; flush rows older than
    FLUSH_LOG_KEEP_DAYS go (an indexed range delete), rebuild rows stay."""
    now = datetime.now(UTC).replace(tzinfo=None)
    log = salesflow_flush_log
    conn.execute(log.insert().values(
        kind=kind, finished_at=now, duration_seconds=time.perf_counter() - started,
        customer_rows=customers, team_rows=team))
    if kind == "flush":
        conn.execute(log.delete().where(log.c.kind == "flush", log.c.finished_at <
                                        now - timedelta(days=FLUSH_LOG_KEEP_DAYS)))


def _as_row(row: CustomerMartRow | TeamMartRow | Row) -> Row:
    return row if isinstance(row, Mapping) else row.as_dict()


def _batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def _table(name: str) -> sa.Table:
    table = (MART_TABLES | DIMENSION_TABLES).get(name)
    if table is None:
        known = ", ".join([*MART_TABLES, *DIMENSION_TABLES])
        raise ValueError(f"unknown table {name!r}; known: {known}")
    return table


def _dimension_rows(dims: DimensionRows) -> dict[str, list[dict[str, Any]]]:
    """Whole records per dimension table: every column present (absent ones NULL).

    Checked before the transaction opens, so a typo fails loudly instead of half-writing.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for name, rows in dims.items():
        table = DIMENSION_TABLES.get(name)
        if table is None:
            known = ", ".join(DIMENSION_TABLES)
            raise ValueError(f"unknown dimension table {name!r}; known: {known}")
        columns = table.columns.keys()
        normalised = []
        for row in rows:
            if unknown := row.keys() - set(columns):
                raise ValueError(f"{name}: unknown column(s) {sorted(unknown)}")
            normalised.append({c: row.get(c) for c in columns})
        out[name] = normalised
    return out
