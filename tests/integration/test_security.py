"""The pipeline through a secured stack that these tests start themselves
(`salesflow.stack.up(secure=True)`: SASL_SSL + SCRAM-SHA-512 and mutual-TLS listeners,
StandardAuthorizer with no ACL = no access, MariaDB with TLS required), on private ports and
a private stack dir, beside whatever plain stack the rest of the suite uses.

Every role runs as its own principal with only the ACLs `salesflow acl apply` gives it:
producer and stream worker over SASL_SSL with SCRAM, the mart builder over TLS with its
client certificate, the mart database over TLS with the CA verified. Nothing here skips.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pymysql
import pytest
from confluent_kafka import Consumer, KafkaError
from pydantic import SecretStr

from mart_builder.commands import open_writer
from salesflow import stack
from salesflow.errors import KafkaAuthorizationError
from salesflow.kafka import client_config, delete_namespace, read_all
from salesflow.settings import Settings
from salesflow.stack import secure
from salesflow.topics import Topics
from tests.conftest import DATA
from tests.marts_expected import (
    CUSTOMER_KEY,
    TEAM_KEY,
    assert_marts_equal,
    load_expected_customers,
    load_expected_team,
)
from tests.workers import MartFollower, StreamWorker, wait_until_processed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


# --- the secured stack ------------------------------------------------------------------------


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> int:
    """A port p such that p .. p + count - 1 are all free."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + count < 65535 and all(_free(port + i) for i in range(count)):
            return port
    raise AssertionError("no free ports")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The secured stack's settings (as `stack up --secure` is given them); started here,
    stopped and wiped afterwards."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        stack_dir=tmp_path_factory.mktemp("secure-stack"),
        kafka_bootstrap=f"127.0.0.1:{free_ports(3)}",
        mysql_port=free_ports(1),
        metrics_port=0,
        flush_interval_seconds=1,
        unknown_ref_retry_seconds=0,
    )
    try:
        result = stack.up(settings, mysql=True, secure=True)
        assert sorted(result.started) == ["kafka", "mariadb"]
        yield settings
    finally:
        stack.down(settings, wipe=True)


class Follower(MartFollower):
    """`marts follow` with --debug: its ready line is INFO, and debug logs are searched for
    secrets too."""

    ARGS = ("--debug", "marts", "follow")


def role(base: Settings, name: str, namespace: str, auth: secure.Auth | None = None,
         database: str | None = None, **update: object) -> Settings:
    """The settings a process of role `name` runs with in `namespace`."""
    settings = secure.role_settings(base, name, auth, mysql=database is not None)
    update["namespace"] = namespace
    if database is not None:
        update["mart_db_url"] = settings.mart_db_url.rsplit("/", 1)[0] + f"/{database}"
    return settings.model_copy(update=update)


def role_env(base: Settings, name: str, namespace: str, auth: secure.Auth | None = None,
             database: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a `salesflow` process of role `name`: only what the stack's
    exports give it (secrets as files in its SALESFLOW_SECRETS_DIR) and `extra`."""
    exports = secure.exports(base, name, auth, mysql=database is not None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESFLOW_")}
    env |= exports.values | {
        "SALESFLOW_NAMESPACE": namespace,
        "SALESFLOW_METRICS_PORT": "0",
        "SALESFLOW_FLUSH_INTERVAL_SECONDS": "1",
        "SALESFLOW_UNKNOWN_REF_RETRY_SECONDS": "0",
        "SALESFLOW_PARTITIONS": "6",
    }
    if database is not None:
        env["SALESFLOW_MART_DB_URL"] = exports.values["SALESFLOW_MART_DB_URL"].rsplit(
            "/", 1)[0] + f"/{database}"
    return env | extra


def run(env: dict[str, str], *args: str, ok: bool = True, cwd: Path | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "salesflow_cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """A failed command's stderr, which must be exactly one line starting `salesflow: `."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("salesflow: "), done.stderr
    assert "no Kafka broker answered" not in lines[0]
    return lines[0]


@pytest.fixture
def namespace(base: Settings) -> Iterator[str]:
    """A fresh namespace whose shared topics and ACLs the administrator applied (through
    the `salesflow acl apply` verb); its topics are deleted afterwards."""
    name = f"s{uuid.uuid4().hex[:10]}"
    run(role_env(base, "admin", name), "acl", "apply")
    yield name
    try:
        delete_namespace(role(base, "admin", name), wait=False)
    except Exception as exc:  # cleanup must not turn a passing test red
        print(f"could not delete the topics of {name}: {exc}")


@pytest.fixture
def database(base: Settings, namespace: str) -> Iterator[str]:
    """A fresh mart database, created over verified TLS as the stack's `salesflow` user."""
    name = f"salesflow_{namespace}"
    pki = secure.pki(base)
    conn = pymysql.connect(host="127.0.0.1", port=base.mysql_port, user=secure.MYSQL_USER,
                           password=pki.mysql_password(),
                           ssl={"ca": str(pki.ca_cert), "check_hostname": True,
                                "verify_mode": True})
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield name
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


# --- the worked examples, end to end ----------------------------------------------------------


def test_examples_end_to_end_with_least_privilege_and_tls_everywhere(base, namespace, database,
                                                                     tmp_path):
    producer = role_env(base, "producer", namespace)
    assert producer["SALESFLOW_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    run(producer, "produce", "dims", str(DATA))
    run(producer, "produce", "sales", str(DATA / "sales_part1.csv"),
        str(DATA / "sales_part2.csv"))

    stream = role(base, "stream", namespace)
    marts = role(base, "marts", namespace, database=database)
    assert marts.kafka_security_protocol == "SSL" and marts.kafka_ssl_cert_file is not None
    assert marts.mart_db_ssl_ca_file is not None
    marts_env = role_env(base, "marts", namespace, database=database)
    with StreamWorker(stream, tmp_path, "worker", **role_env(base, "stream", namespace)):
        wait_until_processed(marts)  # the stream app's offsets, read with marts' DESCRIBE
        run(marts_env, "marts", "flush")
        writer = open_writer(marts)
        assert_marts_equal(writer.read_customers(), load_expected_customers(), CUSTOMER_KEY)
        assert_marts_equal(writer.read_team(), load_expected_team(), TEAM_KEY)

        with writer.engine.begin() as conn:  # the follower must write them again
            conn.exec_driver_sql("DELETE FROM customers_data_mart")
            conn.exec_driver_sql("DELETE FROM sales_team_data_mart")
        with Follower(marts, tmp_path, "follower", **marts_env):
            deadline = time.monotonic() + 90
            while len(writer.read_team()) < 55 and time.monotonic() < deadline:
                time.sleep(0.5)
        assert_marts_equal(writer.read_customers(), load_expected_customers(), CUSTOMER_KEY)
        assert_marts_equal(writer.read_team(), load_expected_team(), TEAM_KEY)

    run(marts_env, "marts", "rebuild")  # from the valid-sales history, as the same role
    assert_marts_equal(writer.read_customers(), load_expected_customers(), CUSTOMER_KEY)
    assert_marts_equal(writer.read_team(), load_expected_team(), TEAM_KEY)
    with writer.engine.connect() as conn:  # the builder's own connections: TLS, verified
        cipher = conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Ssl_cipher'").fetchone()
    assert cipher is not None and cipher[1]
    status = json.loads(run(marts_env, "status", "--json").stdout)
    assert status, "status --json printed nothing"


def test_plaintext_clients_are_refused(base, namespace):
    host, port = base.kafka_bootstrap.split(":")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESFLOW_")}
    env |= {"SALESFLOW_KAFKA_BOOTSTRAP": base.kafka_bootstrap, "SALESFLOW_NAMESPACE": namespace}
    line = one_line_error(run(env, "produce", "dims", str(DATA), ok=False))
    assert "requires TLS" in line, line
    # the mutual-TLS listener too
    env["SALESFLOW_KAFKA_BOOTSTRAP"] = f"{host}:{int(port) + 2}"
    line = one_line_error(run(env, "produce", "dims", str(DATA), ok=False))
    assert "requires TLS" in line, line
    # and MariaDB: a client that does not speak TLS is refused, even with the right password
    pki = secure.pki(base)
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host="127.0.0.1", port=base.mysql_port, user=secure.MYSQL_USER,
                        password=pki.mysql_password(), ssl_disabled=True, connect_timeout=5)


# --- clear errors -----------------------------------------------------------------------------


def test_tls_authentication_and_authorization_failures_are_one_clear_line(base, namespace,
                                                                           tmp_path):
    producer = role_env(base, "producer", namespace)

    no_ca = {k: v for k, v in producer.items() if k != "SALESFLOW_KAFKA_SSL_CA_FILE"}
    line = one_line_error(run(no_ca, "produce", "dims", str(DATA), ok=False))
    assert "certificate is not trusted" in line and "SALESFLOW_KAFKA_SSL_CA_FILE" in line

    secrets = tmp_path / "wrong"
    secrets.mkdir()
    (secrets / "salesflow_kafka_sasl_password").write_text("not-the-password")
    wrong = producer | {"SALESFLOW_SECRETS_DIR": str(secrets)}
    line = one_line_error(run(wrong, "produce", "dims", str(DATA), ok=False))
    assert "wrong user name or password" in line and "'producer'" in line
    assert "not-the-password" not in line

    no_cert = role_env(base, "marts", namespace)
    for name in ("SALESFLOW_KAFKA_SSL_CERT_FILE", "SALESFLOW_KAFKA_SSL_KEY_FILE"):
        no_cert.pop(name)
    line = one_line_error(run(no_cert, "status", ok=False))
    assert "requires a client certificate" in line

    # Authorization: the marts' principal may read but never write the sales topic.
    marts = role_env(base, "marts", namespace)
    line = one_line_error(run(marts, "produce", "sales", str(DATA / "sales_part1.csv"),
                              ok=False))
    assert "ACL missing" in line and f"writing to {namespace}.sales" in line, line

    # ... and a worker without ACLs in a namespace nobody applied any to.
    other = role_env(base, "stream", f"x{uuid.uuid4().hex[:10]}",
                     SALESFLOW_STATE_DIR=str(tmp_path / "state"))
    line = one_line_error(run(other, "stream", ok=False, cwd=tmp_path))
    assert "ACL missing on topic" in line and "SASL user 'stream'" in line


# --- least privilege --------------------------------------------------------------------------


def test_a_producer_cannot_read_the_marts_inputs_nor_join_the_workers_group(base, namespace):
    producer = role(base, "producer", namespace)
    topics = Topics(namespace)
    env = role_env(base, "producer", namespace)
    run(env, "produce", "dims", str(DATA))
    run(env, "produce", "sales", str(DATA / "sales_part1.csv"),  # rows in sales and dlq
        str(DATA / "sales_part2.csv"))
    for topic in (topics.dim("customer"), topics.changelog("customers"), topics.valid_sales,
                  topics.dlq, topics.sales):
        with pytest.raises(KafkaAuthorizationError, match="ACL missing"):
            list(read_all(producer, topic, timeout=20))

    consumer = Consumer(client_config(producer, **{"group.id": topics.app_id,
                                                    "enable.auto.commit": False}))
    try:
        consumer.subscribe([topics.sales])
        error = None
        deadline = time.monotonic() + 30
        while error is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is not None:
                error = msg.error()
            assert msg is None or msg.error() is not None, "the producer read a sale"
        assert error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    finally:
        consumer.close()


def test_each_role_has_only_what_it_needs(base, namespace):
    """The marts' principal sees the stream app's offsets but cannot join its group or read
    raw sales; the stream worker cannot read the marts' election topic."""
    marts = role(base, "marts", namespace)
    topics = Topics(namespace)
    run(role_env(base, "producer", namespace), "produce", "sales",
        str(DATA / "sales_part1.csv"))
    with pytest.raises(KafkaAuthorizationError, match=f"topic {topics.sales} "):
        list(read_all(marts, topics.sales, timeout=20))
    consumer = Consumer(client_config(marts, **{"group.id": topics.app_id}))
    try:
        consumer.subscribe([topics.dlq])  # a topic it may read, in a group it may not join
        deadline, error = time.monotonic() + 30, None
        while error is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            error = msg.error() if msg is not None else None
        assert error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    finally:
        consumer.close()
    with pytest.raises(KafkaAuthorizationError):
        list(read_all(role(base, "stream", namespace), topics.marts_leader, timeout=20))


# --- no secret in any output ------------------------------------------------------------------


class _Hooks(ThreadingHTTPServer):
    """Records the bodies posted to it (the notification webhooks)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HookHandler)
        self.bodies: list[str] = []


class _HookHandler(BaseHTTPRequestHandler):
    server: _Hooks

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.bodies.append(body.decode("utf-8", "replace"))  # its URL is the secret
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _listen_address(port: int) -> str:
    """The local address a TCP port listens on, from /proc/net/tcp (IPv4)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, hex_port = fields[1].split(":")
        if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
            return socket.inet_ntoa(bytes.fromhex(address)[::-1])
    raise AssertionError(f"nothing listens on port {port}")


def _metrics(port: int) -> str:
    deadline = time.monotonic() + 30
    while True:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                          timeout=5).read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_no_planted_secret_appears_in_any_output(base, namespace, database, tmp_path):
    hooks = _Hooks()
    threading.Thread(target=hooks.serve_forever, args=(0.05,), daemon=True).start()
    hook_token, slack_token = uuid.uuid4().hex, uuid.uuid4().hex
    planted = {  # every secret setting; the Kafka and database ones are the stack's own
        "SALESFLOW_NOTIFY_WEBHOOK_URL":
            f"http://127.0.0.1:{hooks.server_port}/hook/{hook_token}",
        "SALESFLOW_NOTIFY_SLACK_WEBHOOK_URL":
            f"http://127.0.0.1:{hooks.server_port}/slack/{slack_token}",
        "SALESFLOW_SCHEMA_REGISTRY_PASSWORD": "registry-" + uuid.uuid4().hex,
        "SALESFLOW_NOTIFY_MIN_INTERVAL_SECONDS": "0",
    }
    pki = secure.pki(base)
    secrets = [hook_token, slack_token, planted["SALESFLOW_SCHEMA_REGISTRY_PASSWORD"],
               pki.mysql_password(), *(pki.scram_password(r) for r in ("producer", "stream",
                                                                          "marts")),
               *(pki.key_password(r) for r in ("admin", "producer", "stream", "marts"))]
    outputs: dict[str, str] = {}

    def record(name: str, done: subprocess.CompletedProcess[str]) -> None:
        outputs[name] = done.stdout + done.stderr

    producer = role_env(base, "producer", namespace, **planted)
    record("produce dims --debug", run(producer, "--debug", "produce", "dims", str(DATA)))
    record("produce sales", run(producer, "produce", "sales", str(DATA / "sales_part1.csv"),
                                str(DATA / "sales_part2.csv")))
    # a traceback: the SASL password in the secrets dir is right, so refuse with an ACL
    record("--debug traceback", run(producer, "--debug", "marts", "flush", "--timeout", "5",
                                    ok=False))
    assert "Traceback" in outputs["--debug traceback"]

    worker_port, follower_port = free_ports(1), free_ports(1)
    stream_env = role_env(base, "stream", namespace, SALESFLOW_METRICS_PORT=str(worker_port),
                          **planted)
    marts_env = role_env(base, "marts", namespace, database=database, **planted)
    stream = role(base, "stream", namespace)
    with StreamWorker(stream, tmp_path, "worker", **stream_env) as worker:
        wait_until_processed(role(base, "marts", namespace))
        outputs["/metrics of the worker"] = _metrics(worker_port)
        assert _listen_address(worker_port) == "127.0.0.1"  # SALESFLOW_METRICS_BIND default
        record("marts flush", run(marts_env, "marts", "flush"))
        record("status --json", run(marts_env, "status", "--json"))
        record("dlq show", run(marts_env, "dlq", "show", "--limit", "0", "--json"))
        with Follower(role(base, "marts", namespace), tmp_path, "follower",
                          **marts_env | {"SALESFLOW_METRICS_PORT": str(follower_port)}):
            outputs["/metrics of the follower"] = _metrics(follower_port)
        # a follower whose database is down: after 3 failed flushes it notifies a person
        unreachable = marts_env | {
            "SALESFLOW_MART_DB_URL": f"mysql+pymysql://salesflow@127.0.0.1:{free_ports(1)}/x"}
        with Follower(role(base, "marts", namespace), tmp_path, "follower-db-down",
                          **unreachable) as down:
            deadline = time.monotonic() + 60
            while len(hooks.bodies) < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
        outputs["follower (database down) log"] = down.log_text(since_start=False)
    outputs["worker log"] = worker.log_text(since_start=False)
    assert len(hooks.bodies) >= 2, "no notification was posted"
    outputs["webhook payloads"] = "\n".join(hooks.bodies)
    letters = list(read_all(role(base, "marts", namespace), Topics(namespace).dlq))
    assert letters
    outputs["dead letters"] = "\n".join(
        repr(m.value()) + repr(m.key()) + repr(m.headers()) for m in letters)
    for verbs in ((), ("stack",), ("stack", "up"), ("acl",), ("acl", "apply"), ("produce",),
                  ("produce", "sales"), ("marts",), ("marts", "flush"), ("dlq",),
                  ("stream",), ("status",)):
        record(f"{' '.join(verbs)} --help", run(producer, *verbs, "--help"))
    record("stack up --secure (exports)", run(
        role_env(base, "admin", namespace) | {
            "SALESFLOW_STACK_DIR": str(base.stack_dir),
            "SALESFLOW_KAFKA_BOOTSTRAP": base.kafka_bootstrap,
            "SALESFLOW_MYSQL_PORT": str(base.mysql_port)},
        "stack", "up", "--secure", "--mysql", "--role", "producer"))
    assert "export SALESFLOW_SECRETS_DIR=" in outputs["stack up --secure (exports)"]
    kafka_logs = stack.kafka.paths(base).logs
    for log in sorted(kafka_logs.glob("*")):
        outputs[f"broker {log.name}"] = log.read_text(errors="replace")
    outputs["mariadb error log"] = stack.mariadb.paths(base).error_log.read_text(
        errors="replace")

    assert len(outputs) > 25
    for name, text in outputs.items():
        for secret in secrets:
            assert secret not in text, f"a secret appears in {name}"


def test_a_role_settings_secret_never_reaches_its_repr(base, namespace):
    settings = role(base, "marts", namespace, database="x")
    assert isinstance(settings.kafka_ssl_key_password, SecretStr)
    for secret in (settings.kafka_ssl_key_password, settings.mart_db_password):
        assert secret is not None
        assert secret.get_secret_value() not in repr(settings) + str(settings)
