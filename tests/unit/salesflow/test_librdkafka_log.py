"""One log line per change of Kafka's reachability, and the gauge that follows it."""

from __future__ import annotations

import json
import logging
import time

from confluent_kafka import KafkaError
from prometheus_client import REGISTRY

from salesflow import instrumentation  # noqa: F401 (registers the gauge)
from salesflow.librdkafka_log import ConnectionLog

FAIL = "FAIL [rdkafka#consumer-1] [thrd:127.0.0.1:9092/1]: 127.0.0.1:9092/1: Connect to " \
       "ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)"


def stats(state: str, stateage_s: float) -> str:
    return json.dumps({"time": int(time.time()), "brokers": {
        "127.0.0.1:9092/1": {"state": state, "stateage": int(stateage_s * 1e6)}}})


def gauge() -> float | None:
    return REGISTRY.get_sample_value("salesflow_kafka_connected")


def test_an_outage_is_one_line_down_and_one_line_up(caplog) -> None:
    log = ConnectionLog(logging.getLogger("test.librdkafka"))
    caplog.set_level(logging.DEBUG, "test.librdkafka")
    log.log(logging.INFO, "%s [%s] %s", "INIT", "rdkafka#consumer-1", "hello")
    for _ in range(500):  # what librdkafka says in a few seconds of outage, per client
        log.log(logging.ERROR, "%s", FAIL)
        log.error(KafkaError(KafkaError._TRANSPORT, "Connect failed"))
        log.error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert not log.connected and gauge() == 0
    log.stats(stats("UP", 3600))  # taken before the outage began: says nothing
    assert not log.connected
    log.stats(stats("UP", 0.5))  # a broker up again since half a second
    assert log.connected and gauge() == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "hello" in lines[0]
    assert lines[1].startswith("Kafka unreachable: 127.0.0.1:9092/1: Connect to")
    assert lines[2].startswith("Kafka reachable again after")
    assert "1499 librdkafka messages suppressed" in lines[2]


def test_other_errors_and_warnings_pass_through(caplog) -> None:
    log = ConnectionLog(logging.getLogger("test.librdkafka2"))
    caplog.set_level(logging.DEBUG, "test.librdkafka2")
    log.error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied"))
    log.log(logging.WARNING, "%s", "FAIL [x] [thrd:a]: a: Disconnected (after 600000ms in UP)")
    assert log.connected
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
