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
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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
# TLS that could not be set up: no retry fixes it. (A refused login, 1045, stays a retry: a
# password being rotated; its message says what else it may be.)
_CR_SSL_CONNECTION_ERROR = 2026
_CR_CONN_HOST_ERROR = 2003
_ER_ACCESS_DENIED = 1045
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
        return _mysql_engine(url, settings.mart_db_ssl_ca_file)
    if settings.mart_db_ssl_ca_file is not None:
        raise ConfigError("SALESFLOW_MART_DB_SSL_CA_FILE is set but the mart database is "
                          f"{backend!r}, not MySQL/MariaDB: TLS cannot be required")
    if backend == "sqlite":
        return _sqlite_engine(url)
    raise ConfigError(
        f"unsupported mart database {backend!r}: use mysql+pymysql://... or sqlite:///..."
    )


def tls_connect_args(ca_file: Path | None) -> dict[str, Any]:
    """PyMySQL's arguments for `SALESFLOW_MART_DB_SSL_CA_FILE`: TLS required (PyMySQL fails
    the connection when the server does not offer it), the server's certificate verified
    against that CA and its name against the host connected to. None: the driver's default."""
    if ca_file is None:
        return {}
    if not ca_file.is_file():
        raise ConfigError(f"SALESFLOW_MART_DB_SSL_CA_FILE={ca_file} is not a readable file")
    return {"ssl": {"ca": str(ca_file), "check_hostname": True, "verify_mode": True}}


def _mysql_engine(url: URL, ca_file: Path | None = None) -> Engine:
    if url.get_driver_name() in ("", "mysqldb"):  # bare mysql:// means the default driver
        url = url.set(drivername=f"{url.get_backend_name()}+pymysql")
    if url.get_driver_name() != "pymysql":
        raise ConfigError("the mart database driver for MySQL/MariaDB is PyMySQL (+pymysql)")
    if "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    if ca_file is not None and any(k.startswith("ssl") for k in url.query):
        raise ConfigError("SALESFLOW_MART_DB_SSL_CA_FILE and ssl parameters in "
                          "SALESFLOW_MART_DB_URL: use one of them")
    engine = sa.create_engine(
        url,
        pool_pre_ping=True,  # a connection the server closed is replaced, not handed out
        pool_recycle=3600,  # under the server's default wait_timeout (8 h)
        hide_parameters=True,  # mart rows hold names and phone numbers: keep them out of logs
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "read_timeout": IO_TIMEOUT_SECONDS,
            "write_timeout": IO_TIMEOUT_SECONDS,
            "sql_mode": MYSQL_SQL_MODE,
            **tls_connect_args(ca_file),
        },
    )
    if ca_file is not None:
        _require_tls(engine)
    return engine


def _require_tls(engine: Engine) -> None:
    """Every new connection proves it is encrypted (`Ssl_cipher` is set), whatever the
    driver version: a PyMySQL that fell back to plaintext would fail here, not go on."""

    @event.listens_for(engine, "connect")
    def _check(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            row = cursor.fetchone()
        finally:
            cursor.close()
        if not row or not row[1]:  # SQLAlchemy closes the connection
            raise pymysql.err.OperationalError(_CR_SSL_CONNECTION_ERROR,
                                               "the connection is not encrypted")


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


def ensure_database(engine: Engine) -> None:
    """MySQL/MariaDB: create the URL's database when it does not exist yet, or say exactly
    what an administrator must run when this user may not (SQLite creates its file itself)."""
    if engine.dialect.name not in _MYSQL_BACKENDS:
        return
    name = engine.url.database
    if not name:
        raise ConfigError("SALESFLOW_MART_DB_URL names no database: end it with /DATABASE, "
                          "e.g. mysql+pymysql://salesflow@127.0.0.1:3306/salesflow")
    try:
        with engine.connect():
            return
    except sa.exc.OperationalError as exc:
        orig = exc.orig
        # 1049: unknown database; 1044: access denied to it (what MariaDB tells a user
        # without privileges on a database that does not exist)
        if not (isinstance(orig, pymysql.err.MySQLError) and orig.args
                and orig.args[0] in (1049, 1044)):
            raise to_salesflow_error(exc, engine, "connecting") from exc
    at = engine.url  # the same server and account, no database (URL.set keeps a None)
    server = _mysql_engine(URL.create(at.drivername, at.username, at.password, at.host,
                                      at.port, None, at.query))
    quote = server.dialect.identifier_preparer.quote
    try:
        with server.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS {quote(name)} "
                                 "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    except sa.exc.SQLAlchemyError as exc:
        user = engine.url.username or "the user"
        raise DatabaseRejected(
            f"the mart database {name!r} does not exist on {engine.url.host}:"
            f"{engine.url.port or 3306} (or {user} may not use it) and {user} may not create "
            "it: an administrator runs "
            f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4; GRANT ALL ON `{name}`.* TO "
            f"'{user}'@'%'; (or point SALESFLOW_MART_DB_URL at an existing database)"
        ) from exc
    finally:
        server.dispose()


# --- errors -----------------------------------------------------------------------------------


def is_transient(exc: sa.exc.SQLAlchemyError) -> bool:
    """True when retrying later may succeed (server gone, lock timeout, read-only, busy)."""
    if isinstance(exc, sa.exc.DisconnectionError | sa.exc.TimeoutError):
        return True  # pool level: no connection could be had
    if not isinstance(exc, sa.exc.DBAPIError):
        return False  # compile errors, bad arguments: our statement is wrong
    if _tls_failure(exc) is not None:
        return False  # the same settings give the same refusal
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
    if (tls := _tls_failure(exc)) is not None:
        message = f"mart database {where}: TLS failed: {tls}"
    elif _mysql_code(exc) == _ER_ACCESS_DENIED:
        message = (f"mart database {where}: login refused ({_describe(exc)}): wrong user "
                   "name or password, or the account requires TLS (SALESFLOW_MART_DB_SSL_CA_FILE)")
    if engine.url.password:  # defence in depth: no driver should echo it, but never trust that
        message = message.replace(str(engine.url.password), "***")
    return kind(message)


def _mysql_code(exc: sa.exc.SQLAlchemyError) -> int | None:
    orig = getattr(exc, "orig", None)
    if isinstance(orig, pymysql.err.MySQLError) and orig.args and isinstance(orig.args[0], int):
        return orig.args[0]
    return None


def _tls_failure(exc: sa.exc.SQLAlchemyError) -> str | None:
    """Why TLS to MySQL failed, in a few words, or None when this is no TLS failure.

    PyMySQL raises 2026 when TLS is required and the server offers none, and wraps a failed
    handshake (an `ssl.SSLError`) into "can't connect" (2003), keeping it as the context."""
    code = _mysql_code(exc)
    if code == _CR_SSL_CONNECTION_ERROR:
        return f"{exc.orig.args[1]} (SALESFLOW_MART_DB_SSL_CA_FILE requires TLS)"  # type: ignore[union-attr]
    cause = exc.orig.__context__ if code == _CR_CONN_HOST_ERROR else None  # type: ignore[union-attr]
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = cause.verify_message or "certificate verify failed"
        if "mismatch" in reason.lower():
            return f"the server's certificate does not name the host connected to ({reason})"
        return (f"the server's certificate is not trusted ({reason}); is "
                "SALESFLOW_MART_DB_SSL_CA_FILE the CA that signed it?")
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake failed ({cause.reason or cause})"
    return None
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
