"""The marts database on a real MariaDB as a newcomer meets it: created when missing (or an
error that says what to run), indexed for the usual filters, its flush log pruned."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from mart_builder.commands import open_writer
from mart_builder.schema import salesflow_flush_log
from salesflow.errors import DatabaseRejected
from salesflow.settings import Settings

pytestmark = pytest.mark.integration


def _settings(url: str, **extra) -> Settings:
    return Settings(_env_file=None, mart_db_url=url, **extra)  # type: ignore[call-arg]


def test_a_missing_database_is_created_and_indexed(mysql_server_url: str) -> None:
    name = f"newcomer_{uuid.uuid4().hex[:8]}"
    server = sa.create_engine(mysql_server_url)
    try:
        writer = open_writer(_settings(f"{mysql_server_url}/{name}"), attempts=1)
        inspector = sa.inspect(writer.engine)
        customers = {tuple(i["column_names"]) for i in inspector.get_indexes(
            "customers_data_mart")}
        team = {tuple(i["column_names"]) for i in inspector.get_indexes("sales_team_data_mart")}
        assert ("sales_date_month",) in customers
        assert ("sales_month", "store_id") in team
        # an existing database from an older release gets the indexes on its next start
        with writer.engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX ix_customers_data_mart_month ON "
                                 "customers_data_mart")
        writer = open_writer(_settings(f"{mysql_server_url}/{name}"), attempts=1)
        assert ("sales_date_month",) in {tuple(i["column_names"]) for i in sa.inspect(
            writer.engine).get_indexes("customers_data_mart")}

        # the flush log keeps a week of flushes, and every rebuild
        old = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=8)
        with writer.engine.begin() as conn:
            for kind in ("flush", "rebuild"):
                conn.execute(salesflow_flush_log.insert().values(
                    kind=kind, finished_at=old, duration_seconds=0.1, customer_rows=0,
                    team_rows=0))
        writer.write([], [], log=True)
        with writer.engine.connect() as conn:
            kinds = sorted(r.kind for r in conn.execute(sa.select(salesflow_flush_log)))
        assert kinds == ["flush", "rebuild"]  # the old flush went, the new one and the rebuild
        writer.engine.dispose()
    finally:
        with server.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        server.dispose()


def test_a_user_who_may_not_create_it_is_told_what_to_run(mysql_server_url: str) -> None:
    user, name = f"fh_{uuid.uuid4().hex[:8]}", f"newcomer_{uuid.uuid4().hex[:8]}"
    server = sa.create_engine(mysql_server_url)
    with server.begin() as conn:
        conn.exec_driver_sql(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw-{user}'")
    try:
        url = sa.make_url(mysql_server_url).set(username=user, password=None)
        settings = _settings(url.render_as_string(hide_password=False),
                             mart_db_password=SecretStr(f"pw-{user}"))
        settings = settings.model_copy(update={
            "mart_db_url": f"{settings.mart_db_url}/{name}"})
        with pytest.raises(DatabaseRejected) as raised:
            open_writer(settings, attempts=1)
        message = str(raised.value)
        assert f"CREATE DATABASE `{name}`" in message and f"TO '{user}'" in message
        assert f"pw-{user}" not in message
    finally:
        with server.begin() as conn:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")
        server.dispose()
