"""All SQL that writes the marts: one transaction per flush, in statements of thousands of rows.

A flush carries whole rows with absolute values (see `metrics.md`, "Restatement"), so an
upsert is the whole write: writing the same state twice changes nothing, and a failed flush
rolls back to exactly the previous one.

Rows travel as *values* (tuples in column order, money in integer cents: `metrics.Values`)
and are turned into SQL without an object per row:
- MySQL/MariaDB: multi-row `INSERT ... ON DUPLICATE KEY UPDATE` statements of up to
  `STATEMENT_BYTES`, the values rendered as SQL literals here (`row_renderer`: integers and
  cents formatted, text escaped by PyMySQL's `escape_string`; the session's sql_mode is ours,
  so backslash escapes hold), the next statement rendered while the server runs one;
- SQLite: one prepared `INSERT ... ON CONFLICT DO UPDATE` run by `executemany` over the tuples
  as they are (cents become money in the statement: `?/100.0`).

A builder flush (`apply`) can *isolate* rows the database refuses (a value its column cannot
hold): the refused statement is split in halves until the offending rows stand alone; every
other row is written, and the refused ones go to `salesflow_quarantine` with the database's
error, in the same transaction. The plain `write` stays all-or-nothing.

Errors leave as `DatabaseUnavailable` (transient: retry the flush) or `DatabaseRejected`
(permanent), see `mart_builder.db`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any

import sqlalchemy as sa
from pymysql.converters import escape_string
from sqlalchemy.engine import Connection, Engine

from mart_builder.cancel import checker
from mart_builder.db import describe_error, is_row_error, translate_errors
from mart_builder.metrics import CustomerMartRow, TeamMartRow, Values
from mart_builder.schema import (
    DIMENSION_TABLES,
    FLUSH_LOG_KEEP_DAYS,
    MART_TABLES,
    customers_data_mart,
    sales_anomalies,
    sales_team_data_mart,
    salesflow_flush_log,
    salesflow_quarantine,
)
from salesflow.errors import ConfigError

BATCH_ROWS = 5000  # rows per statement at most (SQLite: per executemany)
STATEMENT_BYTES = 1 << 20  # MySQL: text per statement at most (max_allowed_packet is >= 4 MB)
FILL_CONNECTIONS = 2  # MySQL rebuild: connections filling the staging tables at once
# Rows kept by `prune_log` (every PRUNE_EVERY flushes): a bound on the table however often
# flushes run, besides the week of flushes `_log` keeps: whichever keeps less (at a flush
# every 2 s, 10,000 rows are 5.5 hours).
FLUSH_LOG_KEEP = 10_000

Row = Mapping[str, Any]
DimensionRows = Mapping[str, Sequence[Row]]
"""Dimension table name (`customer`, `store`, `product`, `sales_team`) -> whole records."""
Key = tuple[Any, ...]
# Statements whose values are rendered into their text: passed to the driver without a
# parameter collection, so a `%` in a name is not read as a placeholder.
_NO_PARAMETERS = {"no_parameters": True}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A row the database would not hold, and why (its own message: no statement text)."""

    table: str
    key: Key
    values: Values
    error: str


@dataclass(frozen=True, slots=True)
class WriteStats:
    """What one write sent: rows per table and how long the transaction took."""

    customers: int = 0
    team: int = 0
    dimensions: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    refused: Sequence[Refusal] = ()
    anomalies: int = 0

    @property
    def rows(self) -> int:
        return self.customers + self.team + self.anomalies + sum(self.dimensions.values())


@dataclass(slots=True)
class TableChanges:
    """What one flush changes in one restated table: rows to upsert, keys to delete, and
    keys whose quarantine entry ends (written or deleted now)."""

    table: str
    upserts: Iterable[Values] = ()  # may be lazy: consumed before `deletes` is read
    deletes: list[Key] = field(default_factory=list)
    released: Sequence[Key] | Callable[[], Sequence[Key]] = ()  # asked after the upserts
    keep: frozenset[str] = frozenset()  # columns set on insert, kept when the row is updated


@dataclass(slots=True)
class ApplyResult:
    written: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    dimensions: dict[str, int] = field(default_factory=dict)
    refused: list[Refusal] = field(default_factory=list)
    seconds: float = 0.0


# --- values <-> SQL --------------------------------------------------------------------------


def column_kinds(table: sa.Table) -> tuple[str, ...]:
    """How each column's values travel: int, money (integer cents), text, bool, date,
    datetime, float."""
    kinds = []
    for column in table.columns:
        t = column.type
        if isinstance(t, sa.Boolean):
            kinds.append("bool")
        elif isinstance(t, sa.Float):
            kinds.append("float")
        elif isinstance(t, sa.Numeric):
            kinds.append("money")
        elif isinstance(t, sa.Integer):
            kinds.append("int")
        elif isinstance(t, sa.String):
            kinds.append("text")
        elif isinstance(t, sa.Date):
            kinds.append("date")
        elif isinstance(t, sa.DateTime):
            kinds.append("datetime")
        else:
            raise TypeError(f"{table.name}.{column.name}: no fast path for {t!r}")
    return tuple(kinds)


_ESCAPED: dict[str | None, str] = {None: "NULL"}  # names and months repeat on many rows


def _escaped(v: str) -> str:
    """A text value as a MySQL string literal (backslash escapes: the session's sql_mode is
    ours); cached, as the same names and months come again and again."""
    if not isinstance(v, str):
        raise TypeError(f"a text column got {type(v).__name__}")
    if len(_ESCAPED) > 200_000:
        _ESCAPED.clear()
        _ESCAPED[None] = "NULL"
    escaped = _ESCAPED[v] = "'" + escape_string(v) + "'"
    return escaped


def _money_literal(cents: int | None) -> str:
    """Integer cents as a DECIMAL literal (`-0.05`); `:d` refuses anything but an integer."""
    if cents is None:
        return "NULL"
    whole, part = divmod(cents if cents >= 0 else -cents, 100)
    return f"{whole:d}.{part:02d}" if cents >= 0 else f"-{whole:d}.{part:02d}"


def _escaped_date(v: date) -> str:
    return f"'{v.isoformat()}'"


def _escaped_datetime(v: datetime) -> str:
    return f"'{v.isoformat(sep=' ')}'"


def _sql_float(v: float) -> str:
    return repr(float(v))


def row_renderer(table: sa.Table) -> Callable[[Values], str]:
    """A function that writes a row's values as one MySQL tuple literal: `(1,'a',123.45)`.

    Generated once per table as a single f-string (no general-purpose call per value, which
    made the rendering, not the database, the cost of a flush): integers through `:d`, which
    refuses anything but an integer, so no text can get into the SQL through a number column;
    money as a DECIMAL literal of its integer cents; text through the escaping cache; NULL
    for None where the column allows it.
    """
    parts = []
    for i, (column, kind) in enumerate(zip(table.columns, column_kinds(table), strict=True)):
        v = f"r[{i}]"
        if kind == "text":  # None is in the cache, as NULL
            parts.append(f"{{T({v}) or E({v})}}")
            continue
        if kind == "int" and not column.nullable:
            parts.append(f"{{{v}:d}}")
            continue
        expr = {"int": f"format({v}, 'd')", "money": f"M({v})", "bool": f"(1 if {v} else 0)",
                "date": f"D({v})", "datetime": f"DT({v})", "float": f"F({v})"}[kind]
        if column.nullable and kind != "money":
            expr = f"'NULL' if {v} is None else {expr}"
        parts.append(f"{{{expr}}}")
    source = 'lambda r: f"(' + ",".join(parts) + ')"'
    scope = {"T": _ESCAPED.get, "E": _escaped, "M": _money_literal, "D": _escaped_date,
             "DT": _escaped_datetime, "F": _sql_float, "format": format}
    return eval(compile(source, f"<row renderer of {table.name}>", "eval"), scope)


def canonical(kinds: Sequence[str], row: Sequence[Any]) -> Values:
    """Values as read back from either database (Decimal or float money, 0/1 booleans, ISO
    date strings) in the form the metric math produces them, so the two compare equal."""
    out = []
    for kind, v in zip(kinds, row, strict=True):
        if v is None:
            out.append(None)
        elif kind == "money":
            out.append(int(v.scaleb(2)) if isinstance(v, Decimal) else
                       round(v * 100) if isinstance(v, float) else int(v) * 100)
        elif kind == "bool":
            out.append(bool(v))
        elif kind == "date" and isinstance(v, str):
            out.append(date.fromisoformat(v))
        elif kind == "datetime" and isinstance(v, str):
            out.append(datetime.fromisoformat(v))
        else:
            out.append(v)
    return tuple(out)


def readable(table: sa.Table, values: Values) -> dict[str, Any]:
    """A row as a JSON-able dict, money as `123.45` text (for the quarantine)."""
    out: dict[str, Any] = {}
    for column, kind, v in zip(table.columns, column_kinds(table), values, strict=True):
        out[column.name] = (_money_literal(v) if kind == "money" and v is not None else
                            v.isoformat() if isinstance(v, date) else v)
    return out


def _keys_of(table: sa.Table) -> tuple[int, ...]:
    names = list(table.columns.keys())
    return tuple(names.index(c.name) for c in table.primary_key.columns)


class _Statements:
    """The SQL of one table on one database, and how to run it over values."""

    def __init__(self, writer: MartWriter, table: sa.Table, name: str | None = None,
                 keep: frozenset[str] = frozenset()) -> None:
        self.table = table
        self.kinds = column_kinds(table)
        self.key_at = _keys_of(table)
        quote = writer.engine.dialect.identifier_preparer.quote
        self.name = quote(name or table.name)
        columns = [c.name for c in table.columns]
        self.columns = ", ".join(quote(c) for c in columns)
        keys = [c.name for c in table.primary_key.columns]
        updated = [c for c in columns if c not in keys and c not in keep] or keys[:1]
        self.mysql = writer.mysql
        if self.mysql:
            self.literal = row_renderer(table)
            self.key_literal = row_renderer(sa.Table(
                f"{table.name}_key", sa.MetaData(),
                *(sa.Column(c.name, c.type, nullable=False) for c in table.primary_key.columns)))
            if writer.values_alias:
                self.on_duplicate = " AS new ON DUPLICATE KEY UPDATE " + ", ".join(
                    f"{quote(c)} = new.{quote(c)}" for c in updated)
            else:
                self.on_duplicate = " ON DUPLICATE KEY UPDATE " + ", ".join(
                    f"{quote(c)} = VALUES({quote(c)})" for c in updated)
        else:
            marks = ", ".join("?/100.0" if k == "money" else "?" for k in self.kinds)
            self.insert_sql = f"INSERT INTO {self.name} ({self.columns}) VALUES ({marks})"
            self.upsert_sql = (
                f"{self.insert_sql} ON CONFLICT ({', '.join(quote(k) for k in keys)}) "
                f"DO UPDATE SET " + ", ".join(f"{quote(c)} = excluded.{quote(c)}"
                                              for c in updated))
            self.delete_sql = (f"DELETE FROM {self.name} WHERE "
                               + " AND ".join(f"{quote(k)} = ?" for k in keys))
            self.dates = [i for i, k in enumerate(self.kinds) if k in ("date", "datetime")]
        self.key_columns = ", ".join(quote(k) for k in keys)

    def sqlite_params(self, values: Values) -> Values:
        if not self.dates:
            return values
        out = list(values)
        for i in self.dates:
            if out[i] is not None:
                out[i] = str(out[i])  # ISO 8601, a space before the time
        return tuple(out)

    def key_of(self, values: Values) -> Key:
        return tuple(values[i] for i in self.key_at)


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
        self.mysql = backend != "sqlite"
        self._values_alias: bool | None = None
        self._statements: dict[tuple[str, str | None, frozenset[str]], _Statements] = {}

    @property
    def values_alias(self) -> bool:
        """MySQL 8.0.19+ names the new row by an alias (`VALUES()` is deprecated there);
        MariaDB only knows `VALUES()`."""
        if self._values_alias is None:
            with translate_errors(self.engine, "connecting"), self.engine.connect() as conn:
                dialect = conn.dialect
                version = dialect.server_version_info or ()
                self._values_alias = (not getattr(dialect, "is_mariadb", False)
                                      and tuple(version) >= (8, 0, 19))
        return self._values_alias

    def _sql(self, table: sa.Table, name: str | None = None,
             keep: frozenset[str] = frozenset()) -> _Statements:
        key = (table.name, name, keep)
        if key not in self._statements:
            self._statements[key] = _Statements(self, table, name, keep)
        return self._statements[key]

    # --- writing ------------------------------------------------------------------------------

    def write(
        self,
        customers: Sequence[CustomerMartRow],
        team: Sequence[TeamMartRow],
        dims: DimensionRows | None = None,
        log: bool = False,
    ) -> WriteStats:
        """Upsert whole rows of both marts (and dimension records) in ONE transaction, all or
        nothing; with `log`, the flush is recorded in `salesflow_flush_log` in it too."""
        dim_values = self._dimension_values(dims or {})
        if not customers and not team and not any(dim_values.values()) and not log:
            return WriteStats(dimensions={name: 0 for name in dim_values})
        changes = [TableChanges(customers_data_mart.name, [r.values() for r in customers]),
                   TableChanges(sales_team_data_mart.name, [r.values() for r in team])]
        result = self._apply(changes, dim_values, log=log, isolate=False)
        return WriteStats(customers=len(customers), team=len(team),
                          dimensions=result.dimensions, seconds=result.seconds)

    def apply(self, changes: Sequence[TableChanges], dims: DimensionRows | None = None, *,
              log: bool = True, cancelled: Callable[[], bool] | None = None) -> ApplyResult:
        """One flush of the builder, in ONE transaction: dimension records, then per table its
        deletes and upserts, the quarantine, and (with `log`) the flush log. Rows the database
        refuses are isolated and quarantined (see the module doc); `cancelled` is asked
        between statements and rolls everything back with `cancel.Cancelled`."""
        return self._apply(changes, self._dimension_values(dims or {}), log=log,
                           isolate=True, cancelled=cancelled)

    def _apply(self, changes: Sequence[TableChanges], dim_values: dict[str, list[Values]], *,
               log: bool, isolate: bool,
               cancelled: Callable[[], bool] | None = None) -> ApplyResult:
        started = time.perf_counter()
        check = checker(cancelled)
        result = ApplyResult()
        with translate_errors(self.engine, "writing a flush"), self.engine.begin() as conn:
            for name, rows in dim_values.items():
                self._upsert(conn, self._sql(DIMENSION_TABLES[name]), rows, check, None)
                result.dimensions[name] = len(rows)
            for change in changes:
                # upserts first: they may be computed as they are written, and only then are
                # the deletes and the released keys known (a key is one or the other)
                sql = self._sql(_table(change.table), keep=change.keep)
                refused: list[Refusal] | None = [] if isolate else None
                sent = self._upsert(conn, sql, change.upserts, check, refused)
                if change.deletes:
                    self._delete(conn, sql, change.deletes, check)
                result.written[change.table] = sent - len(refused or ())
                result.deleted[change.table] = len(change.deletes)
                result.refused.extend(refused or ())
                refused_keys = {r.key for r in refused or ()}
                released = change.released() if callable(change.released) else change.released
                self._release(conn, change.table,
                              [k for k in released if k not in refused_keys])
            self._quarantine(conn, result.refused)
            check()
            if log:
                written = result.written
                _log(conn, "flush", started, written.get(customers_data_mart.name, 0),
                     written.get(sales_team_data_mart.name, 0))
        result.seconds = time.perf_counter() - started
        return result

    def _upsert(self, conn: Connection, sql: _Statements, rows: Iterable[Values],
                check: Callable[[], None], refused: list[Refusal] | None,
                insert_only: bool = False) -> int:
        """Every row, in statements of `batch_rows`; returns how many were sent. MySQL:
        computing and rendering the next statement's rows (`rows` may be lazy) overlaps with
        the server running the one before (a second thread sends; the connection is only
        ever used by one thread at a time)."""
        sent = 0
        if not self.mysql:
            for batch in self._batches(sql, rows):
                check()
                self._send(conn, sql, batch, refused, insert_only)
                sent += len(batch)
            return sent
        pending: tuple[list[Any], _Sending] | None = None
        for batch in self._batches(sql, rows):  # rendered here, while the last one runs
            check()
            if pending is not None:
                self._settle(conn, sql, *pending, refused, insert_only)
            pending = (batch, _Sending(self._execute, conn, sql, batch, insert_only))
            sent += len(batch)
        if pending is not None:
            self._settle(conn, sql, *pending, refused, insert_only)
        return sent

    def _settle(self, conn: Connection, sql: _Statements, batch: list[Any],
                sending: _Sending, refused: list[Refusal] | None, insert_only: bool) -> None:
        try:
            sending.result()
        except sa.exc.DBAPIError as exc:
            self._refused(conn, sql, batch, exc, refused, insert_only)

    def _batches(self, sql: _Statements, rows: Iterable[Values]) -> Iterator[list[Any]]:
        """Rows cut into statements; MySQL: rendered, (values, literal) pairs."""
        if not self.mysql:
            it = iter(rows)
            while batch := list(islice(it, self.batch_rows)):
                yield batch
            return
        literal = sql.literal
        batch: list[tuple[Values, str]] = []
        size = 0
        for values in rows:
            text = literal(values)
            batch.append((values, text))
            size += len(text) + 1
            if size >= STATEMENT_BYTES or len(batch) >= self.batch_rows:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    def _execute(self, conn: Connection, sql: _Statements, batch: list[Any],
                 insert_only: bool) -> None:
        if self.mysql:
            text = (f"INSERT INTO {sql.name} ({sql.columns}) VALUES "
                    + ",".join(t for _, t in batch) + ("" if insert_only else sql.on_duplicate))
            conn.exec_driver_sql(text, execution_options=_NO_PARAMETERS)
        else:
            stmt = sql.insert_sql if insert_only else sql.upsert_sql
            conn.exec_driver_sql(stmt, batch if not sql.dates else
                                 [sql.sqlite_params(v) for v in batch])

    def _send(self, conn: Connection, sql: _Statements, batch: list[Any],
              refused: list[Refusal] | None, insert_only: bool) -> None:
        try:
            self._execute(conn, sql, batch, insert_only)
        except sa.exc.DBAPIError as exc:
            self._refused(conn, sql, batch, exc, refused, insert_only)

    def _refused(self, conn: Connection, sql: _Statements, batch: list[Any],
                 exc: sa.exc.DBAPIError, refused: list[Refusal] | None,
                 insert_only: bool) -> None:
        """A statement the database refused. For some rows' values, when isolating: split it
        in halves until those rows stand alone (upserts are idempotent: a half that an
        earlier attempt partly applied is applied again; MySQL rolled the statement back)."""
        if refused is None or not is_row_error(exc):
            raise exc
        if len(batch) == 1:
            values = batch[0][0] if self.mysql else batch[0]
            refused.append(Refusal(sql.table.name, sql.key_of(values), values,
                                   describe_error(exc)))
            return
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            self._send(conn, sql, half, refused, insert_only)

    def _delete(self, conn: Connection, sql: _Statements, keys: Sequence[Key],
                check: Callable[[], None]) -> None:
        for start in range(0, len(keys), 1000):
            check()
            chunk = keys[start:start + 1000]
            if self.mysql:
                tuples = ",".join(map(sql.key_literal, chunk))
                conn.exec_driver_sql(
                    f"DELETE FROM {sql.name} WHERE ({sql.key_columns}) IN ({tuples})",
                    execution_options=_NO_PARAMETERS)
            else:
                conn.exec_driver_sql(sql.delete_sql, list(chunk))

    def _quarantine(self, conn: Connection, refused: Sequence[Refusal]) -> None:
        if not refused:
            return
        now = _now()
        q = salesflow_quarantine
        for r in refused:
            key = json.dumps(list(r.key), default=str)
            conn.execute(q.delete().where(q.c.mart == r.table, q.c.row_key == key))
            conn.execute(q.insert().values(
                mart=r.table, row_key=key, error=r.error, refused_at=now,
                row_values=json.dumps(readable(_table(r.table), r.values), default=str)))

    def _release(self, conn: Connection, table: str, keys: Sequence[Key]) -> None:
        q = salesflow_quarantine
        for key in keys:
            conn.execute(q.delete().where(q.c.mart == table,
                                          q.c.row_key == json.dumps(list(key), default=str)))

    def replace_all(
        self, customers: Iterable[CustomerMartRow | Values],
        team: Iterable[TeamMartRow | Values], anomalies: Iterable[Values] = (), *,
        isolate: bool = False,
    ) -> WriteStats:
        """Make the marts (and `sales_anomalies`) hold exactly these rows, atomically (for
        the on-demand rebuild).

        A reader sees the old marts or the new ones, never a mix; keys absent from the new
        set disappear. SQLite: delete + insert in one transaction. MySQL: fill staging tables,
        then swap all names in one `RENAME TABLE` (a huge DELETE would bloat the undo
        log). Writes of the live marts made during a MySQL rebuild are replaced by it, so
        pause flushes while rebuilding. With `isolate`, rows the database refuses are left
        out and become the marts' quarantine (which the rebuild replaces).
        """
        started = time.perf_counter()
        counted = dict.fromkeys(MART_TABLES, 0)

        def count(name: str, rows: Iterable[Any]) -> Iterator[Values]:
            for row in rows:  # rows may be computed as they are written: count them here
                counted[name] += 1
                yield _values(row)

        rows = {name: count(name, r) for name, r in
                ((customers_data_mart.name, customers), (sales_team_data_mart.name, team),
                 (sales_anomalies.name, anomalies))}
        refused: list[Refusal] | None = [] if isolate else None
        with translate_errors(self.engine, "replacing the marts"):
            if self.mysql:
                self._replace_by_rename(rows, refused)
            else:
                self._replace_in_transaction(rows, refused)
            with self.engine.begin() as conn:
                if refused is not None:
                    q = salesflow_quarantine
                    conn.execute(q.delete().where(q.c.mart.in_(list(MART_TABLES))))
                    self._quarantine(conn, refused)
                _log(conn, "rebuild", started, counted[customers_data_mart.name],
                     counted[sales_team_data_mart.name])
        refused = refused or []
        for r in refused:
            counted[r.table] -= 1
        return WriteStats(
            customers=counted[customers_data_mart.name], team=counted[sales_team_data_mart.name],
            anomalies=counted[sales_anomalies.name], seconds=time.perf_counter() - started,
            refused=tuple(refused))

    def _replace_in_transaction(self, rows: dict[str, Iterable[Values]],
                                refused: list[Refusal] | None) -> None:
        with self.engine.begin() as conn:
            for table in MART_TABLES.values():
                conn.execute(table.delete())
            for name, values in rows.items():
                self._upsert(conn, self._sql(MART_TABLES[name]), values, checker(None),
                             refused, insert_only=True)

    def _replace_by_rename(self, rows: dict[str, Iterable[Values]],
                           refused: list[Refusal] | None) -> None:
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
            # Staging tables need no single transaction (readers see them only once renamed):
            # they fill over FILL_CONNECTIONS connections, so the server works on several
            # statements at once.
            with contextlib.ExitStack() as stack:
                conns = [stack.enter_context(self.engine.begin())
                         for _ in range(FILL_CONNECTIONS)]
                for name, values in rows.items():
                    self._fill(conns, self._sql(MART_TABLES[name], new[name]), values, refused)
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

    def _fill(self, conns: Sequence[Connection], sql: _Statements, rows: Iterable[Values],
              refused: list[Refusal] | None) -> None:
        """Plain INSERTs of every row, statements dealt round the connections (each sends
        in its own thread while the next statements are rendered here)."""
        pending: list[tuple[list[Any], _Sending] | None] = [None] * len(conns)
        for i, batch in enumerate(self._batches(sql, rows)):
            at = i % len(conns)
            if pending[at] is not None:
                self._settle(conns[at], sql, *pending[at], refused, True)  # type: ignore[misc]
            pending[at] = (batch, _Sending(self._execute, conns[at], sql, batch, True))
        for conn, sending in zip(conns, pending, strict=True):
            if sending is not None:
                self._settle(conn, sql, *sending, refused, True)

    def _dimension_values(self, dims: DimensionRows) -> dict[str, list[Values]]:
        """Whole records per dimension table as values: every column present (absent ones
        NULL), money in cents. Checked before the transaction opens, so a typo fails loudly
        instead of half-writing."""
        out: dict[str, list[Values]] = {}
        for name, rows in dims.items():
            table = DIMENSION_TABLES.get(name)
            if table is None:
                known = ", ".join(DIMENSION_TABLES)
                raise ValueError(f"unknown dimension table {name!r}; known: {known}")
            columns = table.columns.keys()
            money_at = [c for c, k in zip(columns, column_kinds(table), strict=True)
                        if k == "money"]
            values = []
            for row in rows:
                if unknown := row.keys() - set(columns):
                    raise ValueError(f"{name}: unknown column(s) {sorted(unknown)}")
                record = {c: row.get(c) for c in columns}
                for c in money_at:
                    if record[c] is not None:
                        record[c] = int(Decimal(record[c]).scaleb(2))
                values.append(tuple(record.values()))
            out[name] = values
        return out

    # --- reading (the builder's mirror, tests, status, the demo summary) -------------------

    def read_values(self, name: str, batch: int = 20_000) -> Iterator[Values]:
        """Every row of a mart as values (the form the metric math produces), streamed."""
        table = _table(name)
        kinds = column_kinds(table)
        quote = self.engine.dialect.identifier_preparer.quote
        columns = ", ".join(quote(c.name) for c in table.columns)
        with translate_errors(self.engine, f"reading {name}"), self.engine.connect() as conn:
            result = conn.exec_driver_sql(f"SELECT {columns} FROM {quote(name)}",
                                          execution_options={"stream_results": True})
            while rows := result.fetchmany(batch):
                for row in rows:
                    yield canonical(kinds, row)

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

    def read_anomalies(self, rule: str | None = None,
                       since: datetime | None = None) -> list[dict[str, Any]]:
        """The current anomaly flags, oldest flag first (then rule, entity), as dicts: only
        `rule`'s, only those first flagged at or after `since` (naive means UTC). Filtered in
        SQL, through the index on first_flagged_at. A database without the table is refused
        with the reason (a listing must not create or migrate anything)."""
        table = _table("sales_anomalies")
        query = sa.select(table).order_by(table.c.first_flagged_at, table.c.rule,
                                          table.c.entity)
        if rule is not None:
            query = query.where(table.c.rule == rule)
        if since is not None:
            if since.tzinfo is not None:
                since = since.astimezone(UTC).replace(tzinfo=None)
            query = query.where(table.c.first_flagged_at >= since)
        with translate_errors(self.engine, f"reading {table.name}"), \
                self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(table.name):
                where = self.engine.url.render_as_string(hide_password=True)
                raise ConfigError(
                    f"mart database {where} has no table {table.name}: no mart builder of "
                    "this release has run on it yet (`salesflow marts flush` creates it), or "
                    "SALESFLOW_MART_DB_URL names another database")
            return [dict(r._mapping) for r in conn.execute(query)]

    def last_run(self, kind: str) -> dict[str, Any] | None:
        """The latest `salesflow_flush_log` row of a kind ("flush", "rebuild", "failure")."""
        log = salesflow_flush_log
        query = sa.select(log).where(log.c.kind == kind).order_by(log.c.id.desc()).limit(1)
        with translate_errors(self.engine, "reading the flush log"), self.engine.connect() as c:
            row = c.execute(query).first()
        return dict(row._mapping) if row else None

    def record_failure(self, error: str) -> None:
        """Log a failed flush (its error, already free of secrets) for `salesflow status`."""
        with translate_errors(self.engine, "logging a failed flush"), \
                self.engine.begin() as conn:
            conn.execute(salesflow_flush_log.insert().values(
                kind="failure", finished_at=_now(), duration_seconds=0.0, customer_rows=0,
                team_rows=0, error=error[:2000]))

    def quarantined(self) -> list[dict[str, Any]]:
        """Every quarantined row: mart, row_key (JSON), row_values (JSON), error, refused_at."""
        q = salesflow_quarantine
        with translate_errors(self.engine, "reading the quarantine"), \
                self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(q).order_by(q.c.mart,
                                                                                 q.c.row_key))]

    def quarantined_keys(self) -> dict[str, set[Key]]:
        """The keys of the quarantined rows, per mart."""
        out: dict[str, set[Key]] = {}
        for entry in self.quarantined():
            out.setdefault(entry["mart"], set()).add(tuple(json.loads(entry["row_key"])))
        return out

    def prune_log(self, keep: int = FLUSH_LOG_KEEP) -> None:
        """Drop all but the newest `keep` flush log rows (and keep the newest of each kind)."""
        log = salesflow_flush_log
        with translate_errors(self.engine, "pruning the flush log"), self.engine.begin() as c:
            newest = c.execute(sa.select(sa.func.max(log.c.id))).scalar()
            if newest is None or newest <= keep:
                return
            kept = [i for i in c.execute(sa.select(sa.func.max(log.c.id)).group_by(log.c.kind))
                    .scalars()]
            c.execute(log.delete().where(log.c.id <= newest - keep, log.c.id.not_in(kept)))

    def row_counts(self) -> dict[str, int]:
        """Rows per mart and dimension table, all counted in one transaction (one snapshot)."""
        tables = [*MART_TABLES.values(), *DIMENSION_TABLES.values()]
        with translate_errors(self.engine, "counting rows"), self.engine.connect() as conn:
            return {
                t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in tables
            }


class _Sending:
    """One statement running in its own daemon thread (a process that is told to stop must
    not wait for a statement stuck in the database: see `follow`)."""

    def __init__(self, fn: Callable[..., None], *args: Any) -> None:
        self._error: BaseException | None = None

        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # handed to the waiting thread by result()
                self._error = exc

        self._thread = threading.Thread(target=run, name="mart-sql", daemon=True)
        self._thread.start()

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _log(conn: Connection, kind: str, started: float, customers: int, team: int) -> None:
    """One row per flush or rebuild, `finished_at` in UTC; flush rows older than
    FLUSH_LOG_KEEP_DAYS go (an indexed range delete), rebuild rows stay."""
    now = _now()
    log = salesflow_flush_log
    conn.execute(log.insert().values(
        kind=kind, finished_at=now, duration_seconds=time.perf_counter() - started,
        customer_rows=customers, team_rows=team))
    if kind == "flush":
        conn.execute(log.delete().where(log.c.kind.in_(("flush", "failure")), log.c.finished_at <
                                        now - timedelta(days=FLUSH_LOG_KEEP_DAYS)))


def _values(row: CustomerMartRow | TeamMartRow | Values) -> Values:
    return row if isinstance(row, tuple) else row.values()


def _table(name: str) -> sa.Table:
    table = (MART_TABLES | DIMENSION_TABLES).get(name)
    if table is None:
        known = ", ".join([*MART_TABLES, *DIMENSION_TABLES])
        raise ValueError(f"unknown table {name!r}; known: {known}")
    return table

