"""A single-node Apache Kafka (KRaft, broker and controller in one JVM) from the official jars.

The jars come from Maven Central through `ops/kafka/pom.xml` into `settings.cache_dir`, once;
the broker's data, logs and pid file live under `settings.stack_dir/kafka`. The broker listens
on the host:port of `settings.kafka_bootstrap` and its controller on the next port (port + 1),
both on loopback only: this is a local development and test service, not a deployment.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from salesflow.errors import StackError
from salesflow.kafka import client_config
from salesflow.settings import Settings
from salesflow.stack import _proc, pki
from salesflow.stack import secure as secure_stack
from salesflow.stack._proc import ServiceStatus
from salesflow.stack.pki import SCRAM_ROLES

KAFKA_VERSION = "4.1.1"
READY_TIMEOUT_SECONDS = 60.0
LOOPBACK = ("127.0.0.1", "localhost")
_OPS_DIR = Path(__file__).resolve().parents[2] / "ops" / "kafka"
POM = _OPS_DIR / "pom.xml"
LOG4J_CONFIG = _OPS_DIR / "log4j2.properties"
_PROBE_GROUP = "salesflow-stack-probe"


@dataclass(frozen=True)
class KafkaPaths:
    """Where one stack's broker keeps its files."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def out_log(self) -> Path:
        """The JVM's stdout/stderr: warnings, errors and crashes."""
        return self.logs / "kafka.out"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    @property
    def properties(self) -> Path:
        return self.root / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.root / "kafka.pid"


def paths(settings: Settings) -> KafkaPaths:
    return KafkaPaths(settings.stack_dir.expanduser().resolve() / "kafka")


def listen_address(settings: Settings, secure: bool = False) -> tuple[str, int]:
    """The broker's host and port, from `kafka_bootstrap`; only loopback addresses are served.
    The controller listens on port + 1 and, in a secured stack, the TLS listener on port + 2."""
    if secure and (recorded := secure_stack.kafka_port_file(settings)).is_file():
        return "127.0.0.1", int(recorded.read_text())
    first = settings.kafka_bootstrap.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not port.isdigit() or host not in LOOPBACK:
        raise StackError(
            f"SALESFLOW_KAFKA_BOOTSTRAP={settings.kafka_bootstrap!r}: `salesflow stack` only runs "
            "local services; use 127.0.0.1:PORT or localhost:PORT"
        )
    if not 0 < int(port) < 65535 - secure:
        raise StackError(f"Kafka port {port} is out of range (the broker also uses port + 1"
                         f"{' and port + 2' if secure else ''})")
    return "127.0.0.1", int(port)


def _marker(settings: Settings) -> str:
    """What identifies our broker's command line: the properties file of this stack dir."""
    return str(paths(settings).properties)


def libs_dir(settings: Settings) -> Path:
    """The jars of this pom: one folder per pom content, so checkouts with different poms
    (another version, the tools or not) never delete each other's jars."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12] if POM.is_file() else "none"
    return settings.cache_dir.expanduser().resolve() / f"kafka-{KAFKA_VERSION}-{digest}" / \
        "libs"


def ensure_jars(settings: Settings) -> Path:
    """Copy the broker's jars into the cache once; a fetch that did not finish is redone.

    The marker file holds a hash of the pom, so changing a pinned version refetches.
    """
    libs = libs_dir(settings)
    marker = libs.parent / "complete"
    if not POM.is_file():
        raise StackError(f"{POM} is missing: run `salesflow stack` from a salesflow checkout")
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if marker.is_file() and marker.read_text().strip() == digest and any(libs.glob("*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "Maven is not installed (needed once to fetch the Kafka jars): apt-get install maven"
        )
    shutil.rmtree(libs, ignore_errors=True)
    libs.mkdir(parents=True)
    log = libs.parent / "fetch.log"
    log.unlink(missing_ok=True)
    fetch = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies"]
    fetch += [f"-DoutputDirectory={libs}", "-DincludeScope=runtime"]
    if not _proc.run_logged(fetch, log) or not any(libs.glob("kafka_2.13-*.jar")):
        raise StackError(
            f"fetching the Kafka jars with Maven failed; see {log}:\n{_proc.tail(log, 5)}"
        )
    marker.write_text(digest + "\n")
    return libs


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError(
            "Java is not installed (Kafka needs Java 17+): apt-get install openjdk-17-jre-headless"
        )
    return java


def server_properties(settings: Settings, secure: bool = False) -> str:
    """The broker's configuration: one node that is both broker and controller.

    `secure`: no plaintext listener at all. Clients use SASL_SSL with SCRAM-SHA-512 on the
    bootstrap port, or TLS with a client certificate (required) on port + 2; the controller
    listener (port + 1) requires the broker's own certificate. KRaft's StandardAuthorizer
    denies whatever no ACL allows; only the broker and `admin` (certificates) are super users.
    """
    host, port = listen_address(settings, secure)
    cport = port + 1
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{cport}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(paths(settings).data),
        "num.partitions": str(settings.partitions),
        # A single node: every internal topic has one replica. Fewer offsets partitions load
        # faster when the group coordinator starts.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "6",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # The project creates its own topics with the partitions and cleanup policy it needs.
        "auto.create.topics.enable": "false",
    }
    if secure:
        props |= _secure_properties(settings, host, port)
    header = "# Written by `salesflow stack up`; regenerated on every start.\n"
    return header + "".join(f"{key}={value}\n" for key, value in props.items())


def _secure_properties(settings: Settings, host: str, port: int) -> dict[str, str]:
    files = secure_stack.pki(settings)
    sasl, ssl = f"SASL_SSL://{host}:{port}", f"SSL://{host}:{port + 2}"
    return {
        "listeners": f"{sasl},CONTROLLER://{host}:{port + 1},{ssl}",
        "advertised.listeners": f"{sasl},{ssl}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:SSL",
        "inter.broker.listener.name": "SSL",
        # Kafka reads PEM directly: no JKS, no keytool, no store password.
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(files.broker_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(files.ca_cert),
        "listener.name.ssl.ssl.client.auth": "required",
        "listener.name.controller.ssl.client.auth": "required",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required ;",
        # A certificate "O=salesflow, CN=<name>" is the principal User:<name>, as its SCRAM
        # user would be; any other subject keeps its full distinguished name.
        "ssl.principal.mapping.rules": "RULE:^CN=([A-Za-z0-9._-]+),O=salesflow$/$1/,DEFAULT",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": "User:broker;User:admin",
    }


def _format_storage(settings: Settings, java: str, libs: Path) -> None:
    """Give a fresh data dir a cluster id; a dir that has one (meta.properties) is kept."""
    p = paths(settings)
    if (p.data / "meta.properties").is_file():
        return
    p.data.mkdir(parents=True, exist_ok=True)
    cluster_id = _storage_tool(java, libs, "random-uuid")
    _storage_tool(java, libs, "format", "-t", cluster_id, "-c", str(p.properties))


def _storage_tool(java: str, libs: Path, *args: str) -> str:
    """Run kafka-storage (as its script would); returns what it printed."""
    argv = [java, "-cp", f"{libs}/*", "kafka.tools.StorageTool", *args]
    run = subprocess.run(argv, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        output = (run.stdout + run.stderr).strip()[-500:]
        raise StackError(f"kafka-storage {args[0]} failed: {output}")
    return run.stdout.strip()


def is_ready(settings: Settings, timeout: float = 2.0, secure: bool = False) -> bool:
    """True when the broker answers a metadata request and its group coordinator is loaded.

    Consumer groups are what the stream app needs first; describing a throwaway group makes the
    broker find (and, on a fresh cluster, create) the offsets topic's coordinator. A secured
    broker is asked by `admin` over its TLS listener.
    """
    host, port = listen_address(settings, secure)
    if not _proc.port_open(host, port):
        return False
    if secure:
        conf = client_config(secure_stack.role_settings(settings, "admin"), log_level=0)
        conf.pop("logger")  # a broker still starting is not worth a log line
    else:
        conf = {"bootstrap.servers": f"{host}:{port}", "log_level": 0}
    admin = AdminClient(conf)
    try:
        admin.list_topics(timeout=timeout)
        future = admin.describe_consumer_groups([_PROBE_GROUP], request_timeout=timeout)
        future[_PROBE_GROUP].result(timeout=timeout)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        return isinstance(error, KafkaError) and error.code() == KafkaError.GROUP_ID_NOT_FOUND
    except Exception:  # a timeout of the future, a transport error: not ready yet
        return False
    return True


def up(settings: Settings, secure: bool = False) -> bool:
    """Start the broker unless ours is already running; returns True if it started one.
    `secure`: TLS and SASL listeners only, ACLs enforced, one SCRAM user per role."""
    p = paths(settings)
    host, port = listen_address(settings, secure)
    pid = _proc.read_pid(p.pid_file, _marker(settings))
    if pid is not None:
        _wait_ready(settings, None, secure)
        if secure:
            _provision_scram(settings)
        return False
    for taken in (port, port + 1, port + 2)[:3 if secure else 2]:
        if _proc.port_open(host, taken):
            raise StackError(
                f"{host}:{taken} is already in use by a process that `salesflow stack` did not "
                "start; stop it or choose another port in SALESFLOW_KAFKA_BOOTSTRAP"
            )
    java = _java()
    libs = ensure_jars(settings)
    if secure:
        pki.ensure(secure_stack.pki(settings))
        secure_stack.kafka_port_file(settings).write_text(f"{port}\n")
    p.root.mkdir(parents=True, exist_ok=True)
    p.properties.write_text(server_properties(settings, secure))
    _format_storage(settings, java, libs)
    argv = [
        java,
        "-Xms256m",
        "-Xmx768m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={p.logs}",
        "-cp",
        f"{libs}/*",
        "kafka.Kafka",
        str(p.properties),
    ]
    proc = _proc.spawn(argv, p.out_log, p.pid_file)
    try:
        _wait_ready(settings, proc, secure)
        if secure:
            _provision_scram(settings)
    except StackError:
        _proc.stop(p.pid_file, _marker(settings))
        raise
    return True


def _provision_scram(settings: Settings) -> None:
    """Create (or reset to the stack's own passwords) one SCRAM-SHA-512 user per role, as
    `admin` over the TLS listener: the passwords never appear on a command line."""
    pki = secure_stack.pki(settings)
    client = AdminClient(client_config(secure_stack.role_settings(settings, "admin")))
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    upserts = [UserScramCredentialUpsertion(role, info, pki.scram_password(role).encode())
               for role in SCRAM_ROLES]
    try:
        for future in client.alter_user_scram_credentials(upserts).values():
            future.result(timeout=30)
    except KafkaException as exc:
        raise StackError(f"could not create the SCRAM users: {exc.args[0].str()}") from exc


def _wait_ready(settings: Settings, proc: subprocess.Popen[bytes] | None,
                secure: bool = False) -> None:
    """Poll until the broker is ready; fail fast, with its log, if the JVM exits."""
    p = paths(settings)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc is not None and not _proc.alive(proc):
            raise StackError(
                f"Kafka exited during start (exit code {proc.returncode}); last lines of "
                f"{p.out_log}:\n{_proc.tail(p.out_log)}"
            )
        if is_ready(settings, secure=secure):
            return
        time.sleep(0.5)
    raise StackError(
        f"Kafka did not become ready within {READY_TIMEOUT_SECONDS:.0f}s; "
        f"see {p.server_log} and {p.out_log}"
    )


def down(settings: Settings, wipe: bool = False) -> int | None:
    """Stop our broker (if running); returns its pid. `wipe` also deletes its data."""
    p = paths(settings)
    pid = _proc.stop(p.pid_file, _marker(settings))
    if wipe:
        shutil.rmtree(p.data, ignore_errors=True)
        secure_stack.kafka_port_file(settings).unlink(missing_ok=True)
    return pid


def status(settings: Settings) -> ServiceStatus:
    """Never raises: with a remote `kafka_bootstrap` the stack's broker is simply not running."""
    p = paths(settings)
    try:
        host, port = listen_address(settings, secure_stack.is_secure(settings))
    except StackError:
        host, port = "", 0
    pid = _proc.read_pid(p.pid_file, _marker(settings))
    address = f"{host}:{port}" if port else settings.kafka_bootstrap
    if port and secure_stack.is_secure(settings):
        address = f"{host}:{port} (SASL_SSL, SCRAM-SHA-512), {host}:{port + 2} (SSL, mutual TLS)"
    return ServiceStatus(
        name="kafka",
        running=pid is not None and port > 0 and _proc.port_open(host, port),
        pid=pid,
        address=address,
        since=_proc.pid_since(p.pid_file) if pid is not None else None,
        log_file=p.server_log,
        data_dir=p.data,
    )


def exports(settings: Settings) -> dict[str, str]:
    host, port = listen_address(settings)
    return {"SALESFLOW_KAFKA_BOOTSTRAP": f"{host}:{port}"}
