"""Security without a network: how refusals are told apart (from librdkafka's own lines,
captured against the secured stack), the least-privilege ACLs, the secured stack's broker
configuration and exports, TLS to MySQL, and where /metrics listens."""

from __future__ import annotations

import ast
import logging
import stat
import time
from pathlib import Path

import pytest
import yaml
from confluent_kafka import KafkaError
from pydantic import SecretStr

from mart_builder.db import make_engine, tls_connect_args
from salesflow import acl
from salesflow.errors import (
    ConfigError,
    KafkaAuthenticationError,
    KafkaAuthorizationError,
    KafkaTLSError,
)
from salesflow.kafka import classify_refusal, client_config, refused, security_error
from salesflow.settings import Settings
from salesflow.stack import kafka as stack_kafka
from salesflow.stack import secure
from salesflow.stack.pki import Pki
from salesflow.topics import Topics

ROOT = Path(__file__).resolve().parents[3]
PREFIX = "[thrd:sasl_ssl://127.0.0.1:29392/bootstrap]: sasl_ssl://127.0.0.1:29392/bootstrap: "


def sasl(**update: object) -> Settings:
    return Settings(_env_file=None, kafka_bootstrap="127.0.0.1:29392",  # type: ignore[call-arg]
                    kafka_security_protocol="SASL_SSL", kafka_sasl_username="producer",
                    kafka_sasl_password=SecretStr("pw-123456"), **update)


# --- telling refusals apart -------------------------------------------------------------------


@pytest.mark.parametrize(("line", "settings", "kind", "words"), [
    (PREFIX + "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: "
     "broker certificate could not be verified, verify that ssl.ca.location is correctly "
     "configured or root CA certificates are installed (install ca-certificates package) "
     "(after 8ms in state SSL_HANDSHAKE)", sasl(), KafkaTLSError,
     ["certificate is not trusted", "SALESFLOW_KAFKA_SSL_CA_FILE"]),
    (PREFIX + "SASL authentication error: Authentication failed during authentication due to "
     "invalid credentials with SASL mechanism SCRAM-SHA-512 (after 375ms in state AUTH_REQ)",
     sasl(), KafkaAuthenticationError, ["'producer'", "wrong user name or password"]),
    ("[thrd:ssl://127.0.0.1:29394/bootstrap]: ssl://127.0.0.1:29394/bootstrap: Receive "
     "failed: error:0A000412:SSL routines::ssl/tls alert bad certificate: SSL alert number 42 "
     "(after 0ms in state APIVERSION_QUERY)",
     Settings(_env_file=None, kafka_security_protocol="SSL"),  # type: ignore[call-arg]
     KafkaTLSError, ["requires a client certificate", "SALESFLOW_KAFKA_SSL_CERT_FILE"]),
    ("[thrd:127.0.0.1:29392/bootstrap]: 127.0.0.1:29392/bootstrap: Disconnected: connection "
     "closed by peer: receive 0 after POLLIN (after 0ms in state APIVERSION_QUERY)",
     Settings(_env_file=None), KafkaTLSError, ["requires TLS", "SASL_SSL"]),  # type: ignore
    ("[thrd:sasl_ssl://127.0.0.1:9092/bootstrap]: sasl_ssl://127.0.0.1:9092/bootstrap: SSL "
     "handshake failed: Disconnected: SSL connection closed by peer: connecting to a PLAINTEXT "
     "broker listener? (after 22ms in state SSL_HANDSHAKE)", sasl(), KafkaTLSError,
     ["listener is PLAINTEXT"]),
    ("[thrd:ssl://127.0.0.1:29392/bootstrap]: ssl://127.0.0.1:29392/bootstrap: Disconnected: "
     "SSL connection closed by peer (after 2ms in state UP)",
     Settings(_env_file=None, kafka_security_protocol="SSL"),  # type: ignore[call-arg]
     KafkaTLSError, ["requires SASL"]),
])
def test_librdkafka_lines_name_the_refusal(line, settings, kind, words):
    found = classify_refusal(line, settings)
    assert isinstance(found, kind)
    for word in words:
        assert word in str(found)
    assert "pw-123456" not in str(found)


@pytest.mark.parametrize("line", [
    PREFIX + "Connect to ipv4#127.0.0.1:29399 failed: Connection refused (after 0ms in state "
    "CONNECT)",
    "[thrd:main]: Fatal error: Broker: Cluster authorization failed",
    "1/1 brokers are down",
])
def test_an_outage_is_no_refusal(line):
    assert classify_refusal(line, sasl()) is None


def test_the_latest_connection_failure_decides_and_a_closed_connection_must_persist():
    """A refusal followed by "connection refused" is an outage; a connection closed during
    the handshake (also what a stopping broker does) is believed only at the deadline."""
    settings = Settings(_env_file=None, kafka_bootstrap="127.0.0.1:29399")  # type: ignore
    witness = client_config(settings)["logger"]
    since = time.monotonic()
    closed = ("[thrd:127.0.0.1:29399/bootstrap]: 127.0.0.1:29399/bootstrap: Disconnected: "
              "connection closed by peer: receive 0 after POLLIN (after 0ms in state "
              "APIVERSION_QUERY)")
    witness.log(logging.INFO, "%s [%s] %s", "FAIL", "rdkafka#producer-1", closed)
    assert refused(settings, since, final=False) is None
    assert isinstance(refused(settings, since, final=True), KafkaTLSError)
    down = ("[thrd:127.0.0.1:29399/bootstrap]: 127.0.0.1:29399/bootstrap: Connect to "
            "ipv4#127.0.0.1:29399 failed: Connection refused (after 0ms in state CONNECT)")
    witness.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", down)
    assert refused(settings, since, final=True) is None
    assert refused(settings, time.monotonic() + 1) is None  # older than the call


def test_authorization_failures_name_the_resource_operation_and_principal():
    error = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    found = security_error(error, sasl(), topic="t.sales", group="t-stream", operation="WRITE")
    assert isinstance(found, KafkaAuthorizationError)
    assert "ACL missing on topic t.sales (WRITE)" in str(found)
    assert "SASL user 'producer'" in str(found)
    group = security_error(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED), sasl(),
                           topic="t.sales", group="t-stream",
                           operation={"topic": "READ", "group": "DESCRIBE"})
    assert "ACL missing on group t-stream (DESCRIBE)" in str(group)
    txn = security_error(KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED), None,
                         transactional_id="t-stream-1", operation="WRITE")
    assert "transactional id t-stream-1 (WRITE)" in str(txn)
    assert security_error(KafkaError(KafkaError._TIMED_OUT), sasl()) is None


# --- least privilege --------------------------------------------------------------------------


def _ops(grants: list[acl.Grant], resource: str, name: str) -> set[str]:
    out: set[str] = set()
    for g in grants:
        matches = name.startswith(g.name) if g.pattern == "prefixed" else name == g.name
        if g.resource == resource and matches:
            out |= set(g.operations)
    return out


def test_every_grant_stays_inside_its_namespace():
    topics = Topics("ns1")
    for grant in acl.grants("ns1"):
        if grant.resource == "cluster":
            assert grant.operations == ("IDEMPOTENT_WRITE",)
        else:
            assert grant.name.startswith(("ns1.", "ns1-")), grant
            assert grant.name != "ns1." and grant.name != "ns1-"
        assert grant.principal == f"User:{grant.role}"
    # nobody may create the shared topics: `acl apply` does, as an administrator
    for role in acl.ROLES:
        grants = acl.role_grants(topics, role)
        for name in acl.shared_topics(topics):
            assert "CREATE" not in _ops(grants, "topic", name), (role, name)


def test_the_producer_writes_and_reads_nothing():
    topics = Topics("ns1")
    grants = acl.role_grants(topics, "producer")
    assert all("READ" not in g.operations for g in grants)
    assert {g.resource for g in grants} == {"topic", "cluster"}
    for name in (topics.sales, topics.dlq, topics.dim("customer")):
        assert "WRITE" in _ops(grants, "topic", name)
    assert not _ops(grants, "topic", topics.valid_sales)
    assert not _ops(grants, "topic", topics.changelog("customers"))


def test_only_the_stream_worker_joins_its_group_and_uses_transactions():
    topics = Topics("ns1")
    stream, marts = acl.role_grants(topics, "stream"), acl.role_grants(topics, "marts")
    assert _ops(stream, "group", topics.app_id) == {"READ"}
    assert _ops(marts, "group", topics.app_id) == {"DESCRIBE"}  # offsets, not membership
    assert _ops(stream, "transactional_id", f"{topics.app_id}-0123abcd") == {"WRITE",
                                                                              "DESCRIBE"}
    assert not _ops(marts, "transactional_id", f"{topics.app_id}-0123abcd")
    for table, name in topics.changelogs.items():
        assert {"READ", "WRITE", "CREATE"} <= _ops(stream, "topic", name), table
    assert "READ" not in _ops(marts, "topic", topics.sales)
    assert _ops(marts, "topic", topics.marts_leader) == {"READ", "DESCRIBE", "CREATE"}
    assert all("WRITE" not in g.operations for g in marts)


def test_bindings_are_one_per_operation_and_principals_can_be_renamed():
    items = acl.grants("ns1", {"marts": "User:CN=marts.example.com"})
    bindings = acl.bindings(items)
    assert len(bindings) == sum(len(g.operations) for g in items)
    assert {b.principal for b in bindings} == {"User:producer", "User:stream",
                                               "User:CN=marts.example.com"}


# --- the secured stack ------------------------------------------------------------------------


def test_the_secured_broker_has_no_plaintext_listener_and_denies_by_default(tmp_path):
    settings = Settings(_env_file=None, stack_dir=tmp_path,  # type: ignore[call-arg]
                        kafka_bootstrap="127.0.0.1:29392")
    props = dict(line.split("=", 1) for line in
                 stack_kafka.server_properties(settings, secure=True).splitlines()
                 if line and not line.startswith("#"))
    assert "PLAINTEXT" not in props["listeners"]
    assert props["listeners"] == ("SASL_SSL://127.0.0.1:29392,CONTROLLER://127.0.0.1:29393,"
                                  "SSL://127.0.0.1:29394")
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:SSL"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.ssl.ssl.client.auth"] == "required"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:broker;User:admin"
    plain = stack_kafka.server_properties(settings)
    assert "authorizer" not in plain and "PLAINTEXT://127.0.0.1:29392" in plain


def test_secure_defaults_sit_beside_the_plain_stack_unless_set():
    defaults = secure.secure_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    assert (defaults.stack_dir, defaults.kafka_bootstrap, defaults.mysql_port) == (
        Path(".stack-secure"), "127.0.0.1:9192", 3316)
    given = Settings(_env_file=None, stack_dir=Path("/x"), mysql_port=1)  # type: ignore
    kept = secure.secure_settings(given)
    assert (kept.stack_dir, kept.kafka_bootstrap, kept.mysql_port) == (
        Path("/x"), "127.0.0.1:9192", 1)


def _fake_pki(root: Path) -> Pki:
    """Credentials and (empty) certificate files where the stack keeps them; no openssl."""
    pki = Pki(root / "secure")
    pki.dir.mkdir(parents=True)
    for name in ("ca", "admin", "producer", "stream", "marts"):
        pki.cert(name).write_text("")
        pki.key(name).write_text("")
    return pki


def test_exports_name_files_never_secrets(tmp_path):
    settings = Settings(_env_file=None, stack_dir=tmp_path,  # type: ignore[call-arg]
                        kafka_bootstrap="127.0.0.1:29392", mysql_port=23316)
    pki = _fake_pki(tmp_path)
    producer = secure.exports(settings, "producer", mysql=True)
    assert producer.values["SALESFLOW_KAFKA_BOOTSTRAP"] == "127.0.0.1:29392"
    assert producer.values["SALESFLOW_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert producer.values["SALESFLOW_KAFKA_SASL_USERNAME"] == "producer"
    assert "SALESFLOW_KAFKA_SASL_PASSWORD" in producer.unset  # else it beats the file
    assert "SALESFLOW_KAFKA_SSL_CERT_FILE" in producer.unset
    marts = secure.exports(settings, "marts", mysql=True)
    assert marts.values["SALESFLOW_KAFKA_BOOTSTRAP"] == "127.0.0.1:29394"
    assert marts.values["SALESFLOW_KAFKA_SECURITY_PROTOCOL"] == "SSL"
    assert marts.values["SALESFLOW_MART_DB_SSL_CA_FILE"] == str(pki.ca_cert)
    secrets = [pki.scram_password("producer"), pki.key_password("marts"), pki.mysql_password()]
    for lines in (producer, marts):
        text = repr(lines.values) + repr(lines.unset)
        assert not [s for s in secrets if s in text]
        folder = Path(lines.values["SALESFLOW_SECRETS_DIR"])
        for file in folder.iterdir():
            assert stat.S_IMODE(file.stat().st_mode) == 0o600
    role = secure.role_settings(settings, "marts", mysql=True)
    assert role.kafka_ssl_key_password is not None
    assert role.kafka_ssl_key_password.get_secret_value() == pki.key_password("marts")
    assert role.mart_db_password.get_secret_value() == pki.mysql_password()  # type: ignore
    with pytest.raises(ConfigError, match="no SCRAM user"):
        secure.exports(settings, "admin", "scram")


# --- TLS to MySQL -----------------------------------------------------------------------------


def test_a_ca_file_makes_tls_required_and_verified(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    assert tls_connect_args(None) == {}
    assert tls_connect_args(ca) == {"ssl": {"ca": str(ca), "check_hostname": True,
                                            "verify_mode": True}}
    with pytest.raises(ConfigError, match="not a readable file"):
        tls_connect_args(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="TLS cannot be required"):
        make_engine(Settings(_env_file=None, mart_db_ssl_ca_file=ca,  # type: ignore[call-arg]
                             mart_db_url=f"sqlite:///{tmp_path / 'm.db'}"))
    with pytest.raises(ConfigError, match="use one of them"):
        make_engine(Settings(_env_file=None, mart_db_ssl_ca_file=ca,  # type: ignore[call-arg]
                             mart_db_url="mysql+pymysql://u@h/db?ssl_ca=/x.pem"))


def test_kafka_tls_files_must_exist(tmp_path):
    with pytest.raises(ConfigError, match=r"SALESFLOW_KAFKA_SSL_CA_FILE=.* is not a file"):
        sasl(kafka_ssl_ca_file=Path("")).kafka_client_config()


# --- /metrics ---------------------------------------------------------------------------------


def test_every_metrics_server_listens_on_the_bind_setting():
    calls = []
    for path in ROOT.glob("*/**/*.py"):
        if ".venv" in path.parts or "tests" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(
                    node.func, "attr", None)) == "start_http_server":
                addr = {k.arg: ast.unparse(k.value) for k in node.keywords}.get("addr")
                calls.append((path.name, addr))
    assert calls and all(addr == "settings.metrics_bind" for _, addr in calls), calls
    assert Settings(_env_file=None).metrics_bind == "127.0.0.1"  # type: ignore[call-arg]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["x-salesflow-app"]["environment"]
    assert env["SALESFLOW_METRICS_BIND"] == "0.0.0.0"
