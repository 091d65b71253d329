"""`salesflow stack` against real processes, on its own stack dir and ports.

Kafka on 127.0.0.1:19092 (controller 19093) and MariaDB on 13306, so the main stack on
9092/3306 that the other integration tests use is never touched. Nothing here skips: a missing
Java, Maven or MariaDB fails the test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from salesflow.errors import StackError
from salesflow.settings import Settings
from salesflow.stack import down, kafka, mariadb, status, up

pytestmark = pytest.mark.integration

KAFKA = "127.0.0.1:19092"
MYSQL_PORT = 13306


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    # _env_file=None: a developer's .env must not move this stack onto the main one's ports.
    s = Settings(
        _env_file=None,
        stack_dir=tmp_path_factory.mktemp("stack"),
        kafka_bootstrap=KAFKA,
        mysql_port=MYSQL_PORT,
    )
    yield s
    down(s, wipe=True)  # even when a test failed half-way: leave no process behind


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _pids(s: Settings) -> dict[str, int | None]:
    return {svc.name: svc.pid for svc in status(s)}


def test_up_twice_starts_once_and_both_services_answer(settings: Settings) -> None:
    first = up(settings, mysql=True)
    assert sorted(first.started) == ["kafka", "mariadb"]
    assert first.exports == {
        "SALESFLOW_KAFKA_BOOTSTRAP": KAFKA,
        "SALESFLOW_MART_DB_URL": f"mysql+pymysql://root@127.0.0.1:{MYSQL_PORT}/salesflow",
    }
    pids = _pids(settings)
    assert all(pids.values()) and all(svc.running for svc in first.services)

    second = up(settings, mysql=True)
    assert second.started == []
    assert _pids(settings) == pids

    metadata = AdminClient({"bootstrap.servers": KAFKA}).list_topics(timeout=10)
    assert metadata.brokers
    conn = pymysql.connect(host="127.0.0.1", port=MYSQL_PORT, user="root", database="salesflow")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()


def test_stale_pid_file_is_ignored_and_removed(tmp_path: Path) -> None:
    other = Settings(_env_file=None, stack_dir=tmp_path, kafka_bootstrap="127.0.0.1:19192")
    pid_file = kafka.paths(other).pid_file
    pid_file.parent.mkdir(parents=True)
    # A live pid that is not our broker (this very test process): never taken for ours.
    pid_file.write_text(f"{os.getpid()}\n")
    assert kafka.status(other).running is False
    assert not pid_file.exists()


def test_down_stops_everything_and_restart_keeps_data(settings: Settings) -> None:
    up(settings, mysql=True)
    topic = "stack-test.keep"
    admin = AdminClient({"bootstrap.servers": KAFKA})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(timeout=30)

    pids = _pids(settings)
    stopped = down(settings)
    assert stopped == pids
    assert not any(_alive(pid) for pid in pids.values() if pid)
    assert not any(svc.running or svc.pid for svc in status(settings))
    assert not kafka.paths(settings).pid_file.exists()
    assert not mariadb.paths(settings).pid_file.exists()

    restarted = up(settings, mysql=True)
    assert sorted(restarted.started) == ["kafka", "mariadb"]
    assert topic in AdminClient({"bootstrap.servers": KAFKA}).list_topics(timeout=10).topics


def test_down_wipe_removes_data(settings: Settings) -> None:
    up(settings, mysql=True)
    pids = _pids(settings)
    down(settings, wipe=True)
    assert not any(_alive(pid) for pid in pids.values() if pid)
    assert not kafka.paths(settings).data.exists()
    assert not mariadb.paths(settings).data.exists()
    assert down(settings) == {"kafka": None, "mariadb": None}


def test_only_loopback_is_served(tmp_path: Path) -> None:
    remote = Settings(_env_file=None, stack_dir=tmp_path, kafka_bootstrap="kafka.example:9092")
    with pytest.raises(StackError, match="only runs local services"):
        up(remote)
    assert status(remote)[0].running is False
