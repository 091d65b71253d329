"""Kafka client factories and topic creation, built from `Settings` only.

Partitioning contract of `<ns>.sales`: a sale lives on partition `crc32(sale_id) % partitions`.
That is librdkafka's default partitioner (`consistent_random`) for a keyed message, so any
confluent-kafka/librdkafka client that sends single sales keyed by `sale_id` agrees with our
own producer, which packs sales of one partition into one message. Because every copy of a
`sale_id` meets on one partition, the stream app detects replays and conflicts locally.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import TypeVar

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic, OffsetSpec

from salesflow.errors import (
    ConfigError,
    KafkaAuthenticationError,
    KafkaAuthorizationError,
    KafkaSecurityError,
    KafkaTLSError,
    KafkaUnavailable,
    SalesflowError,
)
from salesflow.librdkafka_log import ConnectionLog
from salesflow.settings import Settings
from salesflow.topics import Topics


def partition_for(sale_id: str, partitions: int) -> int:
    """The partition of a sale: librdkafka's consistent partitioner over the `sale_id` key."""
    return zlib.crc32(sale_id.encode("utf-8")) % partitions


LIBRDKAFKA_LOG = logging.getLogger("salesflow.librdkafka")
_Client = TypeVar("_Client", AdminClient, Consumer, Producer)
CONNECTION = ConnectionLog(LIBRDKAFKA_LOG)


def client_config(settings: Settings, **extra: object) -> dict[str, object]:
    """Config of every confluent-kafka client: librdkafka logs go to Python logging
    (`salesflow.librdkafka`), not straight to stderr, so a CLI error stays one line; on the
    way, TLS and SASL failures are noted (`refusal`) to explain a failed call, and an outage
    is one line when it starts and one when it ends (`salesflow.librdkafka_log`)."""
    return {**settings.kafka_client_config(), **CONNECTION.client_config(),
            "logger": _Witness(settings), **extra}


def admin(settings: Settings) -> AdminClient:
    return create(AdminClient, settings)


def create(kind: type[_Client], settings: Settings, **extra: object) -> _Client:
    """A client of `settings` (`client_config`); settings librdkafka refuses at creation,
    such as a client key it cannot decrypt, are a ConfigError naming the setting."""
    try:
        return kind(client_config(settings, **extra))
    except KafkaException as exc:
        text = exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else ""
        if "ssl.key.location" in text:
            raise ConfigError(
                f"the client key SALESFLOW_KAFKA_SSL_KEY_FILE={settings.kafka_ssl_key_file} "
                "cannot be read: a wrong or missing passphrase "
                "(SALESFLOW_KAFKA_SSL_KEY_PASSWORD), or not a PEM key") from exc
        if "ssl.certificate.location" in text or "ssl.ca.location" in text:
            which = "CERT" if "certificate.location" in text else "CA"
            raise ConfigError(f"SALESFLOW_KAFKA_SSL_{which}_FILE is not a PEM certificate "
                              f"librdkafka can read: {_short(text)}") from exc
        raise ConfigError(f"Kafka client settings refused: {_short(text or str(exc))}") from exc


def check_reachable(settings: Settings, timeout: float = 10.0) -> None:
    """Fail fast with one clear line when no broker answers (instead of hanging), naming a
    TLS, authentication or protocol failure when that is why."""
    metadata(settings, admin(settings), timeout=timeout, hint=" (start one with `salesflow "
             "stack up`)")


def metadata(settings: Settings, client: AdminClient | Consumer, topic: str | None = None,
             timeout: float = 10.0, hint: str = "") -> ClusterMetadata:
    """`client.list_topics(topic)`, failing as soon as the cluster refuses us (TLS, SASL)
    rather than at the timeout, and then with the reason. A consumer `client` must not be
    assigned anything yet (its logs are served by polling it)."""
    since = time.monotonic()
    deadline = since + timeout
    while True:
        try:
            return client.list_topics(topic, timeout=min(1.0, max(0.1, deadline -
                                                                   time.monotonic())))
        except KafkaException as exc:
            client.poll(0)  # serve the logs that say why
            final = time.monotonic() >= deadline
            failure = refused(settings, since, final)
            if failure is not None:
                raise failure from exc
            if final:
                raise KafkaUnavailable(
                    f"no Kafka broker answered at {settings.kafka_bootstrap} within "
                    f"{timeout:.0f}s{hint}") from exc


# --- why the cluster refused us ---------------------------------------------------------------
#
# A client that cannot connect only says "transport failure" or times out; librdkafka says why
# (certificate not trusted, SASL authentication failed, ...) in its logs. `_Witness` is the
# logger of every client: it forwards each line to `salesflow.librdkafka` and remembers the
# latest connection failure per bootstrap (a refusal, or None for any other failure, so an
# outage after a refusal is an outage), for `refused()` to turn into one line. Authorization
# failures are ordinary error codes, turned into one line by `security_error()`.


class _ProtocolMismatch(KafkaTLSError):
    """A connection closed during the handshake, as a listener of another protocol does: but
    so may a broker that is stopping. Believed only when it persists (`refused(final=True)`)."""


_REFUSALS: dict[str, tuple[float, KafkaSecurityError | None]] = {}
_REFUSALS_LOCK = threading.Lock()
_AFTER = re.compile(r"\s*\(after \d+ms in state [A-Z_]+\)(?: \(_[A-Z_]+\))?$")
_PREFIX = re.compile(r"^(?:\[thrd:[^\]]*\]: )?(?:\w+://)?[^\s/]+/(?:bootstrap|\d+): ")
AUTHORIZATION_FAILURES = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "group",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "cluster",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "transactional id",
}
AUTHENTICATION_FAILURES = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}


class _Witness:
    """The `logger` of a client (confluent-kafka calls `log(level, fmt, *args)`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def log(self, level: int, msg: str, *args: object) -> None:
        # Capped at ERROR: a fatal error also reaches the caller as an exception, which the
        # CLI turns into its one line; the log line is for --debug. An outage is told once.
        CONNECTION.log(min(level, logging.ERROR), msg, *args)
        if level >= logging.INFO and args:
            failure = classify_refusal(str(args[-1]), self.settings)
            if failure is not None or args[0] == "FAIL":  # FAIL: a connection failed
                with _REFUSALS_LOCK:
                    _REFUSALS[self.settings.kafka_bootstrap] = (time.monotonic(), failure)


def refused(settings: Settings, since: float, final: bool = True) -> KafkaSecurityError | None:
    """The TLS, authentication or protocol failure a client of `settings` met last, after
    `since` (a `time.monotonic()`), if its latest connection failure was one: the reason a
    call that timed out failed. A protocol mismatch counts only when `final`."""
    with _REFUSALS_LOCK:
        at, failure = _REFUSALS.get(settings.kafka_bootstrap, (0.0, None))
    if failure is None or at < since or (isinstance(failure, _ProtocolMismatch) and not final):
        return None
    return failure


def classify_refusal(line: str, settings: Settings) -> KafkaSecurityError | None:
    """One librdkafka log line as a TLS, authentication or protocol failure, or None (pure).

    librdkafka names these only in its words, so this is the one place that reads them."""
    detail = _AFTER.sub("", _PREFIX.sub("", line.strip()))
    protocol = settings.kafka_security_protocol
    where = f"Kafka at {settings.kafka_bootstrap}"
    low = detail.lower()
    if "sasl authentication error" in low or "authentication failed" in low:
        user = settings.kafka_sasl_username
        if "invalid credentials" in low or "invalid username or password" in low:
            return KafkaAuthenticationError(
                f"{where} refused the SASL login of user {user!r} "
                f"({settings.kafka_sasl_mechanism}): wrong user name or password")
        return KafkaAuthenticationError(
            f"{where} refused the SASL login of user {user!r} "
            f"({settings.kafka_sasl_mechanism}): {_short(detail)}")
    if "unsupported sasl mechanism" in low:
        return KafkaAuthenticationError(
            f"{where} does not offer SASL mechanism {settings.kafka_sasl_mechanism}: "
            f"{_short(detail)} (SALESFLOW_KAFKA_SASL_MECHANISM)")
    if "certificate verify failed" in low:
        hint = ("is SALESFLOW_KAFKA_SSL_CA_FILE the CA that signed the brokers' certificates?"
                if settings.kafka_ssl_ca_file else
                "set SALESFLOW_KAFKA_SSL_CA_FILE to the CA that signed the brokers' "
                "certificates")
        reason = "the broker's certificate is not trusted"
        if "hostname mismatch" in low or "ip address mismatch" in low:
            reason = "the broker's certificate does not name the address connected to"
            hint = "connect to a name that its certificate holds"
        return KafkaTLSError(f"TLS to {where} failed: {reason} "
                             f"(certificate verify failed); {hint}")
    if any(alert in low for alert in ("alert bad certificate", "alert certificate required",
                                      "alert unknown ca", "alert handshake failure")):
        if settings.kafka_ssl_cert_file is None:
            return KafkaTLSError(
                f"TLS to {where} failed: the broker requires a client certificate; set "
                "SALESFLOW_KAFKA_SSL_CERT_FILE and SALESFLOW_KAFKA_SSL_KEY_FILE")
        return KafkaTLSError(
            f"TLS to {where} failed: the broker refused the client certificate "
            f"{settings.kafka_ssl_cert_file} (is it signed by a CA the broker trusts?)")
    if "connecting to a plaintext broker listener" in low:
        return _ProtocolMismatch(
            f"TLS to {where} failed: that listener is PLAINTEXT, not "
            f"{protocol} (SALESFLOW_KAFKA_SECURITY_PROTOCOL)")
    if ("ssl handshake failed" in low or "ssl routines" in low) and protocol in (
            "SSL", "SASL_SSL"):
        kind = _ProtocolMismatch if "closed by peer" in low else KafkaTLSError
        return kind(f"TLS to {where} failed: {_short(detail)}")
    if protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and "connection closed by peer" in low \
            and "apiversion" in line.lower():
        return _ProtocolMismatch(
            f"{where} closed the connection before answering: the listener probably "
            f"requires TLS, not {protocol} (SALESFLOW_KAFKA_SECURITY_PROTOCOL=SSL or "
            "SASL_SSL)")
    if protocol == "SSL" and "ssl connection closed by peer" in low and "in state UP" in line:
        return _ProtocolMismatch(
            f"{where} closed the connection after TLS: the listener probably requires SASL "
            "(SALESFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL)")
    return None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def security_error(error: KafkaError, settings: Settings | None, *, topic: str | None = None,
                   group: str | None = None, transactional_id: str | None = None,
                   operation: str | dict[str, str] | None = None, what: str | None = None
                   ) -> KafkaSecurityError | None:
    """A KafkaError as the security error it is, or None: an authorization failure names
    the resource (the `topic`, `group` or `transactional_id` the call was about) and the
    `operation` it needed (per kind of resource, when a dict)."""
    code = error.code()
    if code in AUTHORIZATION_FAILURES:
        kind = AUTHORIZATION_FAILURES[code]
        name = {"topic": topic, "group": group, "transactional id": transactional_id}.get(kind)
        target = "the cluster" if kind == "cluster" else f"{kind} {name}" if name else f"a {kind}"
        if isinstance(operation, dict):
            operation = operation.get(kind)
        needed = f" ({operation})" if operation else ""
        doing = f" while {what}" if what else ""
        return KafkaAuthorizationError(
            f"Kafka refused {principal_of(settings)}: ACL missing on {target}{needed}{doing}; "
            "see `salesflow acl show`")
    if code in AUTHENTICATION_FAILURES or code == KafkaError._SSL:
        kind = KafkaTLSError if code == KafkaError._SSL else KafkaAuthenticationError
        found = classify_refusal(error.str(), settings) if settings is not None else None
        return found or kind(f"Kafka refused {principal_of(settings)}: {_short(error.str())}")
    return None


def principal_of(settings: Settings | None) -> str:
    """Who we are to the cluster, as far as the settings tell."""
    if settings is None:
        return "this client"
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL_"):
        return f"SASL user {settings.kafka_sasl_username!r}"
    if settings.kafka_ssl_cert_file is not None:
        return f"the client certificate {settings.kafka_ssl_cert_file.name}"
    return "this client (anonymous)"


def unavailable(settings: Settings, message: str, since: float,
                exc: KafkaException | None = None) -> SalesflowError:
    """The error to raise for a failed call: the cluster's refusal when there was one (TLS,
    authentication, ACL), else `KafkaUnavailable(message)` (transient)."""
    if exc is not None and exc.args and isinstance(exc.args[0], KafkaError):
        found = security_error(exc.args[0], settings)
        if found is not None:
            return found
    return refused(settings, since) or KafkaUnavailable(message)


def ensure_topics(settings: Settings, names: Iterable[str] | None = None,
                  timeout: float = 30.0, partitions: int | None = None) -> None:
    """Create the project's topics if missing, each with its configuration (`Topics.config`)
    and `partitions` partitions (default: the setting)."""
    topics = Topics(settings.namespace)
    wanted = list(names) if names is not None else [
        topics.sales, topics.dlq, topics.valid_sales, *topics.dims.values()]
    client = admin(settings)
    existing = set(metadata(settings, client, timeout=timeout).topics)
    new = [
        NewTopic(
            name,
            num_partitions=partitions or settings.partitions,
            replication_factor=settings.replication_factor,
            config=topics.config(name),
        )
        for name in wanted
        if name not in existing
    ]
    if not new:
        return
    for name, future in client.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            error = exc.args[0]
            if error.name() != "TOPIC_ALREADY_EXISTS":  # a concurrent creator won
                # A topic we may not DESCRIBE looks missing; creating it is then refused too.
                raise security_error(error, settings, topic=name,
                                     operation="DESCRIBE, or CREATE while it does not exist"
                                     ) or KafkaUnavailable(
                    f"could not create topic {name}: {error.str()}") from exc
    _wait_for_leaders(client, [t.topic for t in new], timeout)


def topic_id(settings: Settings, name: str, timeout: float = 30.0) -> str:
    """The broker's id of a topic: a topic deleted and created again under the same name
    gets a new one."""
    since = time.monotonic()
    client = admin(settings)
    try:
        described = client.describe_topics(TopicCollection([name]), request_timeout=timeout)
        return str(described[name].result().topic_id)
    except KafkaException as exc:
        found = security_error(exc.args[0], settings, topic=name,
                               operation="DESCRIBE")
        raise found or unavailable(settings, f"could not describe topic {name}: {exc}",
                                   since) from exc


def delete_namespace(settings: Settings, wait: bool = True, timeout: float = 30.0) -> None:
    """Delete every topic of the namespace (`Topics.owns`); with `wait`, until the broker no
    longer lists them."""
    topics = Topics(settings.namespace)
    client = admin(settings)

    def remaining() -> list[str]:
        return [t for t in client.list_topics(timeout=timeout).topics if topics.owns(t)]

    try:
        names = remaining()
        if names:
            for future in client.delete_topics(names, operation_timeout=timeout).values():
                future.result(timeout=timeout)
        deadline = time.monotonic() + timeout
        while wait and remaining():
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"topics of {settings.namespace} still listed")
            time.sleep(0.2)
    except KafkaException as exc:
        raise KafkaUnavailable(f"could not delete the topics of {settings.namespace}: "
                               f"{exc}") from exc


def _wait_for_leaders(client: AdminClient, names: list[str], timeout: float) -> None:
    """A topic is usable once every partition has a leader; right after creation, reads of
    a partition still electing one fail with NOT_LEADER_FOR_PARTITION."""
    deadline = time.monotonic() + timeout
    while True:
        topics = client.list_topics(timeout=timeout).topics
        if all(name in topics and topics[name].partitions and
               all(p.leader >= 0 for p in topics[name].partitions.values()) for name in names):
            return
        if time.monotonic() > deadline:
            raise KafkaUnavailable(f"no leader for every partition of {', '.join(names)}")
        time.sleep(0.1)


_TRANSIENT = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
              KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT}


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float,
               settings: Settings | None = None) -> tuple[int, int]:
    """(low, high) of one partition, retrying the transient errors of a fresh topic."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0]
            denied = security_error(error, settings, topic=tp.topic,
                                    operation="DESCRIBE")
            if denied is not None:
                raise denied from exc
            if error.code() not in _TRANSIENT or time.monotonic() > deadline:
                raise KafkaUnavailable(f"offsets of {tp.topic}[{tp.partition}]: {exc}") from exc
            time.sleep(0.2)


def topic_partitions(settings: Settings, topic: str, timeout: float = 10.0) -> int:
    """How many partitions a topic has (the producer partitions by this, not the setting)."""
    info = metadata(settings, admin(settings), topic, timeout).topics.get(topic)
    check_topic(settings, topic, info)
    if not info.partitions:
        raise KafkaUnavailable(f"topic {topic} is not available")
    return len(info.partitions)


def check_topic(settings: Settings, topic: str, info: object | None,
                operation: str = "DESCRIBE") -> None:
    """Raise the right error for a topic's metadata (`list_topics(topic).topics.get(topic)`)
    that is missing or in error: an ACL that is missing, or a topic that does not exist."""
    error = getattr(info, "error", None) if info is not None else None
    if info is not None and error is None:
        return
    if error is not None:
        denied = security_error(error, settings, topic=topic, operation=operation)
        if denied is not None:
            raise denied
    raise KafkaUnavailable(f"topic {topic} is not available")


def read_all(settings: Settings, topic: str, timeout: float = 30.0,
             isolation_level: str = "read_committed") -> Iterator[Message]:
    """Every message of `topic` from the beginning up to its end at the time of the call.

    No consumer group is used (partitions are assigned, nothing is committed), so reading a
    topic this way never disturbs the stream app. Only committed transactions are read,
    unless `isolation_level` says `read_uncommitted`.
    """
    consumer = _reader(settings, isolation_level)
    try:
        info = metadata(settings, consumer, topic, timeout).topics.get(topic)
        check_topic(settings, topic, info, "DESCRIBE and READ")
        ranges = {p: watermarks(consumer, TopicPartition(topic, p), timeout, settings)
                  for p in info.partitions}
        yield from _read(consumer, topic, ranges, timeout, settings)
    finally:
        consumer.close()


def read_range(settings: Settings, topic: str, partition: int, start: int, end: int,
               timeout: float = 30.0) -> Iterator[Message]:
    """The messages at offsets [start, end) of one partition (those still in the log), read
    like `read_all`, without a group."""
    consumer = _reader(settings)
    try:
        low, high = watermarks(consumer, TopicPartition(topic, partition), timeout, settings)
        yield from _read(consumer, topic, {partition: (max(start, low), min(end, high))},
                         timeout, settings)
    finally:
        consumer.close()


def _reader(settings: Settings, isolation_level: str = "read_committed") -> Consumer:
    return create(Consumer, settings, **{
        "group.id": Topics(settings.namespace).reader_group, "enable.auto.commit": False,
        "enable.partition.eof": True, "isolation.level": isolation_level})


def _read(consumer: Consumer, topic: str, ranges: dict[int, tuple[int, int]],
          timeout: float, settings: Settings) -> Iterator[Message]:
    """The messages in `[start, end)` per partition; `timeout` bounds each wait.

    A partition is done at its end offset or at the end of its log, whichever comes first:
    transaction markers take offsets without being messages, and a read_committed reader
    stops before a transaction that is still open.
    """
    ends = {p: end for p, (start, end) in ranges.items() if end > start}
    if not ends:
        return
    consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in ends])
    since = time.monotonic()
    deadline = since + timeout
    while ends:
        batch = consumer.consume(1000, timeout=0.5)
        if not batch:
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:  # past a final transaction marker
                    ends.pop(tp.partition)
            if ends and time.monotonic() > deadline:
                raise unavailable(settings, f"timed out reading {topic}", since)
        for msg in batch:
            deadline = time.monotonic() + timeout
            error = msg.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                # An ACL refusal may come for the group (partition -1 or any), not ours.
                denied = security_error(error, settings, topic=topic,
                                        group=Topics(settings.namespace).reader_group,
                                        operation={"topic": "READ", "group": "DESCRIBE"})
                if denied is not None:
                    raise denied
            end = ends.get(msg.partition())
            if end is None:
                continue
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ends.pop(msg.partition())
                    continue
                raise KafkaUnavailable(f"reading {topic}: {error.str()}")
            if msg.offset() >= end:  # past the range (written since the call)
                ends.pop(msg.partition())
                continue
            yield msg
            if msg.offset() >= end - 1:
                ends.pop(msg.partition())


def group_lag(settings: Settings, group: str, topic: str, timeout: float = 10.0
              ) -> dict[int, int]:
    """Messages of `topic` not yet committed by consumer `group`, per partition."""
    since = time.monotonic()
    consumer = create(Consumer, settings, **{"group.id": group, "enable.auto.commit": False})
    try:
        md = metadata(settings, consumer, topic, timeout).topics.get(topic)
        check_topic(settings, topic, md)
        committed = consumer.committed([TopicPartition(topic, p) for p in md.partitions],
                                       timeout=timeout)
        lag = {}
        for tp in committed:
            if tp.error is not None:
                raise KafkaException(tp.error)
            low, high = watermarks(consumer, tp, timeout, settings)
            done = tp.offset if tp.offset >= 0 else low
            lag[tp.partition] = max(0, high - done)
        return lag
    except KafkaException as exc:
        consumer.poll(0)
        found = security_error(exc.args[0], settings, topic=topic, group=group,
                               operation="DESCRIBE")
        raise found or unavailable(settings, f"could not read the lag of {group}: {exc}",
                                   since) from exc
    finally:
        consumer.close()


def wait_for_group(settings: Settings, group: str, topic: str, timeout: float) -> None:
    """Until `group` has committed everything that is in `topic` now (bounded)."""
    deadline = time.monotonic() + timeout
    while (behind := sum(group_lag(settings, group, topic).values())) > 0:
        if time.monotonic() > deadline:
            raise KafkaUnavailable(
                f"the stream app still has {behind} message(s) of {topic} to process after "
                f"{timeout:.0f}s (is `salesflow stream` running?)")
        time.sleep(0.5)


def end_offsets(settings: Settings, partitions: Iterable[tuple[str, int]],
                timeout: float = 30.0, earliest: bool = False, *, committed: bool = False,
                client: AdminClient | None = None) -> dict[tuple[str, int], int]:
    """The end offset of many partitions in one request: the high watermark, with `earliest`
    the low one, with `committed` the last stable offset (what a read_committed reader can
    reach now).

    (A consumer's own `get_watermark_offsets` queues behind its fetch long-poll: about half a
    second per partition while it is assigned.) Pass `client` to reuse an admin client.
    A retriable error (a leader just moved: a broker restarting) is asked again until
    `timeout` has passed.
    """
    spec = OffsetSpec.earliest() if earliest else OffsetSpec.latest()
    wanted = {TopicPartition(t, p): spec for t, p in partitions}
    if not wanted:
        return {}
    isolation = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    since = time.monotonic()
    client = client or admin(settings)  # must outlive its futures
    out: dict[tuple[str, int], int] = {}
    while wanted:
        left = max(1.0, timeout - (time.monotonic() - since))
        futures = client.list_offsets(wanted, isolation_level=isolation, request_timeout=left)
        again = {}
        for tp, future in futures.items():
            try:
                out[(tp.topic, tp.partition)] = future.result(left).offset
            except (KafkaException, TimeoutError) as exc:  # a future's wait: a TimeoutError
                client.poll(0)
                error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
                if (isinstance(error, KafkaError) and error.retriable()
                        and time.monotonic() - since < timeout):
                    again[tp] = spec
                    continue
                found = (security_error(error, settings, topic=tp.topic, operation="DESCRIBE")
                         if isinstance(error, KafkaError) else None)
                raise found or unavailable(settings, f"could not read end offsets: "
                                           f"{exc or 'timed out'}", since) from exc
        if again:
            time.sleep(0.2)
        wanted = again
    return out
