"""Engines for the mart database, and the one place where driver errors become salesflow's.

`make_engine` is the only code that reads `mart_db_url` / `mart_db_password`. The password
goes into SQLAlchemy's URL object, whose str/repr mask it, and never into a message.

Errors are told apart by exception class (SQLAlchemy wraps the PEP 249 classes), refined by
the driver's numeric error code where the class alone misleads: PyMySQL raises
`OperationalError` for "unknown column" and sqlite3 for "no such column" — both permanent.
Never by message text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine

from salesflow.errors import (
    ConfigError,
    DatabaseRejected,
    DatabaseUnavailable,
    SalesflowError,
)
from salesflow.settings import Settings

CONNECT_TIMEOUT_SECONDS = 5
# A read or write on the socket that takes longer than this is a dead server, not a slow
# statement: every statement we send is a bounded batch (well under this on a sane server),
# and InnoDB's own lock wait timeout (50 s by default) fires first.
IO_TIMEOUT_SECONDS = 120
# Strict mode on every session: a value that does not fit is an error, never silently clipped.
MYSQL_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"

_MYSQL_BACKENDS = frozenset({"mysql", "mariadb"})

# MySQL/MariaDB error codes that PyMySQL raises as OperationalError although retrying the same
# statement can never succeed: the schema or privileges changed under us.
_MYSQL_PERMANENT_CODES = frozenset({
    1049,  # ER_BAD_DB_ERROR: the URL names a database that does not exist
    1054,  # ER_BAD_FIELD_ERROR: unknown column
    1142,  # ER_TABLEACCESS_DENIED_ERROR
    1143,  # ER_COLUMNACCESS_DENIED_ERROR
    1364,  # ER_NO_DEFAULT_FOR_FIELD: a NOT NULL column we don't know about
    3819,  # ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
    4025,  # ER_CONSTRAINT_FAILED (MariaDB CHECK constraint)
})
# MySQL/MariaDB errors about one row's values (a value its column cannot hold): the other rows
# of the statement are fine, so a flush isolates the refused rows instead of failing.
_MYSQL_ROW_CODES = frozenset({
    1048,  # ER_BAD_NULL_ERROR
    1264,  # ER_WARN_DATA_OUT_OF_RANGE: "Out of range value for column"
    1265,  # WARN_DATA_TRUNCATED
    1292,  # ER_TRUNCATED_WRONG_VALUE
    1366,  # ER_TRUNCATED_WRONG_VALUE_FOR_FIELD: "Incorrect ... value"
    1406,  # ER_DATA_TOO_LONG
    1690,  # ER_DATA_OUT_OF_RANGE (an expression)
    3819,  # ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
    4025,  # ER_CONSTRAINT_FAILED (MariaDB CHECK constraint)
})
# sqlite3's extended result codes for one row's values (not UNIQUE/PRIMARY KEY: two rows).
_SQLITE_ROW_CODES = frozenset({
    275,  # SQLITE_CONSTRAINT_CHECK
    1299,  # SQLITE_CONSTRAINT_NOTNULL
})
# sqlite3 raises OperationalError both for "database is locked" (SQLITE_BUSY, transient) and
# for "no such column" (SQLITE_ERROR, permanent); the primary result code tells them apart.
_SQLITE_ERROR = getattr(sqlite3, "SQLITE_ERROR", 1)


# --- engines ----------------------------------------------------------------------------------


def database_url(settings: Settings) -> URL:
    """`mart_db_url` as a URL object, with `mart_db_password` (when set) put into it."""
    try:
        url = sa.make_url(settings.mart_db_url)
    except sa.exc.ArgumentError:
        # SQLAlchemy's message repeats the string, which may hold a password.
        raise ConfigError("SALESFLOW_MART_DB_URL is not a valid SQLAlchemy URL") from None
    if settings.mart_db_password is not None:
        url = url.set(password=settings.mart_db_password.get_secret_value())
    return url


def make_engine(settings: Settings) -> Engine:
    """The mart database engine: MySQL/MariaDB via PyMySQL, or SQLite."""
    url = database_url(settings)
    backend = url.get_backend_name()
    if backend in _MYSQL_BACKENDS:
        return _mysql_engine(url)
    if backend == "sqlite":
        return _sqlite_engine(url)
    raise ConfigError(
        f"unsupported mart database {backend!r}: use mysql+pymysql://... or sqlite:///..."
    )


def _mysql_engine(url: URL) -> Engine:
    if url.get_driver_name() in ("", "mysqldb"):  # bare mysql:// means the default driver
        url = url.set(drivername=f"{url.get_backend_name()}+pymysql")
    if url.get_driver_name() != "pymysql":
        raise ConfigError("the mart database driver for MySQL/MariaDB is PyMySQL (+pymysql)")
    if "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    return sa.create_engine(
        url,
        pool_pre_ping=True,  # a connection the server closed is replaced, not handed out
        pool_recycle=3600,  # under the server's default wait_timeout (8 h)
        hide_parameters=True,  # mart rows hold names and phone numbers: keep them out of logs
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "read_timeout": IO_TIMEOUT_SECONDS,
            "write_timeout": IO_TIMEOUT_SECONDS,
            "sql_mode": MYSQL_SQL_MODE,
        },
    )


def _sqlite_engine(url: URL) -> Engine:
    engine = sa.create_engine(url, hide_parameters=True)
    in_memory = url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # sqlite3's legacy mode opens no transaction for SELECT or DDL, so a reader could see
        # two flushes and a migration could half-apply; we emit BEGIN ourselves (below).
        dbapi_connection.isolation_level = None
        if not in_memory:
            # WAL: readers keep reading the last committed flush while a flush is written.
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


# --- errors -----------------------------------------------------------------------------------


def is_transient(exc: sa.exc.SQLAlchemyError) -> bool:
    """True when retrying later may succeed (server gone, lock timeout, read-only, busy)."""
    if isinstance(exc, sa.exc.DisconnectionError | sa.exc.TimeoutError):
        return True  # pool level: no connection could be had
    if not isinstance(exc, sa.exc.DBAPIError):
        return False  # compile errors, bad arguments: our statement is wrong
    if exc.connection_invalidated:
        return True
    if not isinstance(
        exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.InternalError
    ):
        return False  # ProgrammingError, DataError, IntegrityError, NotSupportedError
    orig = exc.orig
    if isinstance(orig, pymysql.err.MySQLError) and orig.args:
        return orig.args[0] not in _MYSQL_PERMANENT_CODES
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        return code is None or code & 0xFF != _SQLITE_ERROR
    return True


def to_salesflow_error(exc: sa.exc.SQLAlchemyError, engine: Engine, action: str) -> SalesflowError:
    """`DatabaseUnavailable` (retry later) or `DatabaseRejected` (don't), with a safe message.

    The message names the database by its masked URL and the driver's own error, never the
    statement's parameters (mart rows hold personal data) nor the password.
    """
    kind = DatabaseUnavailable if is_transient(exc) else DatabaseRejected
    where = engine.url.render_as_string(hide_password=True)
    message = f"mart database {where}: {action} failed: {_describe(exc)}"
    if engine.url.password:  # defence in depth: no driver should echo it, but never trust that
        message = message.replace(str(engine.url.password), "***")
    return kind(message)


def is_row_error(exc: sa.exc.SQLAlchemyError) -> bool:
    """True when the database refused a statement for the values of some of its rows (out of
    range, too long, NULL in a NOT NULL column, a CHECK): the other rows can be written."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, pymysql.err.MySQLError) and orig.args:
        return orig.args[0] in _MYSQL_ROW_CODES
    if isinstance(orig, sqlite3.Error):
        return getattr(orig, "sqlite_errorcode", None) in _SQLITE_ROW_CODES
    return False


def describe_error(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's own error (class and message), never the statement or its parameters."""
    return _describe(exc)


def _describe(exc: sa.exc.SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        text = f"{type(orig).__module__}.{type(orig).__name__}: {orig}"
    else:
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return text if len(text) <= 300 else text[:297] + "..."


@contextmanager
def translate_errors(engine: Engine, action: str) -> Iterator[None]:
    """Map SQLAlchemy errors raised inside the block to salesflow's (`raise ... from exc`)."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        raise to_salesflow_error(exc, engine, action) from exc
