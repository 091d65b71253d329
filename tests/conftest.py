"""Real services for integration tests, never mocks.

Where each comes from, in order:
1. endpoints from the environment (`SALESFLOW_TEST_KAFKA_BOOTSTRAP`, `SALESFLOW_TEST_MYSQL_URL`,
   the latter a server URL such as `mysql+pymysql://root@127.0.0.1:3306`);
2. testcontainers, when a Docker engine answers;
3. the project's own `salesflow stack` (Kafka from the official jars, MariaDB), started here
   if it is not running, and left running for the next session.
A missing service fails the test run; it is never skipped.

Every test gets its own topic namespace; the session gets its own MySQL database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from salesflow.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def _docker_answers() -> bool:
    if os.environ.get("SALESFLOW_TEST_NO_DOCKER") or not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _stack_settings() -> Settings:
    return Settings(_env_file=None, stack_dir=ROOT / ".stack")  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if url := os.environ.get("SALESFLOW_TEST_KAFKA_BOOTSTRAP"):
        yield url
    elif _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        from salesflow import stack

        settings = _stack_settings()
        stack.up(settings, mysql=False)
        yield settings.kafka_bootstrap


@pytest.fixture(scope="session")
def mysql_server_url() -> Iterator[str]:
    """A MySQL server URL without a database."""
    if url := os.environ.get("SALESFLOW_TEST_MYSQL_URL"):
        yield url.rstrip("/")
    elif _docker_answers():
        from testcontainers.mysql import MySqlContainer

        with MySqlContainer("mysql:8.4", username="root", password="test") as mysql:
            yield mysql.get_connection_url().rsplit("/", 1)[0].replace("mysql://", "mysql+pymysql://")
    else:
        from salesflow import stack
        from salesflow.stack import mariadb

        settings = _stack_settings()
        stack.up(settings, mysql=True)
        yield mariadb.url(settings).rsplit("/", 1)[0]


@pytest.fixture(scope="session")
def mysql_url(mysql_server_url: str) -> Iterator[str]:
    """A fresh database for this test session, dropped afterwards."""
    name = f"salesflow_test_{uuid.uuid4().hex[:10]}"
    server = sa.create_engine(mysql_server_url)
    with server.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    yield f"{mysql_server_url}/{name}"
    with server.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
    server.dispose()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(kafka_bootstrap: str, namespace: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings of one test: its own topics (deleted afterwards) and its own SQLite file."""
    test_settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        kafka_bootstrap=kafka_bootstrap,
        namespace=namespace,
        mart_db_url=f"sqlite:///{tmp_path / 'marts.db'}",
        metrics_port=0,
        flush_interval_seconds=1,
        unknown_ref_retry_seconds=0,
    )
    yield test_settings
    _delete_topics(test_settings)


def _delete_topics(settings: Settings) -> None:
    """Drop the test's topics, so a long session does not leave thousands on the broker."""
    from salesflow.kafka import delete_namespace

    try:
        delete_namespace(settings, wait=False)
    except Exception as exc:  # cleanup must not turn a passing test red
        print(f"could not delete the topics of {settings.namespace}: {exc}")
