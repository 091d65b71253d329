"""librdkafka's logs and errors, as one line per change of Kafka's reachability.

While the brokers are unreachable librdkafka reports every failed reconnect of every client
(about 20 lines a second per client). Every client of a process shares one `ConnectionLog`:
the first connection error says "Kafka unreachable" once, further librdkafka warnings and
errors are counted, not logged, until a client's statistics show a broker up again, which
says "Kafka reachable again" once. The same two transitions drive the
`salesflow_kafka_connected` gauge, which the SalesflowKafkaUnreachable alert reads.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import KafkaError

# error_cb codes that mean "no connection to the cluster".
CONNECTION_ERRORS = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                               KafkaError._RESOLVE})
STATISTICS_INTERVAL_MS = 5000


class ConnectionLog:
    """librdkafka's `logger`, `error_cb` and `stats_cb` for every client of one process."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.down_since: float | None = None
        self.down_wall: float | None = None  # the same moment, wall clock (stats use it)
        self.suppressed = 0
        self._starting = False
        self._announced = False
        self._lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return self.down_since is None

    # librdkafka's logger: confluent-kafka calls `.log(level, fmt, *args)` on poll
    def log(self, level: int, msg: str, *args: Any, **_: Any) -> None:
        if self.down_since is not None and level >= logging.WARNING:
            with self._lock:
                self.suppressed += 1
            return
        text = msg % args if args else msg
        if level >= logging.ERROR and text.startswith("FAIL "):  # a connection failed
            self.went_down(text.rsplit("]: ", 1)[-1])
            return
        self.logger.log(level, "%s", text)

    def error(self, err: KafkaError) -> None:
        """error_cb: a connection error marks Kafka unreachable (once)."""
        if err.code() in CONNECTION_ERRORS:
            self.went_down(err.str())

    def stats(self, raw: str) -> None:
        """stats_cb: a broker that came UP after the outage began marks Kafka reachable
        again (once); statistics taken before it began say nothing."""
        down_at = self.down_wall
        if self.down_since is None or down_at is None:
            return
        try:
            stats = json.loads(raw)
        except ValueError:
            return
        now = float(stats.get("time", time.time()))
        for broker in stats.get("brokers", {}).values():
            up_since = now - broker.get("stateage", 0) / 1e6
            if broker.get("state") == "UP" and up_since >= down_at - 2:  # "time": whole s
                self.came_back()
                return

    @contextmanager
    def starting(self) -> Iterator[None]:
        """While a service starts, a broker it cannot reach is its caller's to report (the
        CLI's one line when it gives up), not an outage to announce."""
        self._starting = True
        try:
            yield
        finally:
            self._starting = False

    def went_down(self, reason: str) -> None:
        with self._lock:
            if self.down_since is not None:
                self.suppressed += 1
                return
            self.down_since, self.down_wall = time.monotonic(), time.time()
            self.suppressed = 0
            self._announced = not self._starting
        _gauge(0)
        if self._announced:
            self.logger.error("Kafka unreachable: %s (retrying; further connection errors "
                              "are not logged until it is back)", reason)

    def came_back(self) -> None:
        with self._lock:
            if self.down_since is None:
                return
            seconds, suppressed = time.monotonic() - self.down_since, self.suppressed
            self.down_since = None
        _gauge(1)
        if self._announced:
            self.logger.warning("Kafka reachable again after %.0f s (%d librdkafka messages "
                                "suppressed meanwhile)", seconds, suppressed)

    def client_config(self) -> dict[str, Any]:
        """The callbacks for a confluent-kafka client's configuration."""
        return {"logger": self, "error_cb": self.error, "stats_cb": self.stats,
                "statistics.interval.ms": STATISTICS_INTERVAL_MS}


def _gauge(value: int) -> None:
    from salesflow import instrumentation

    instrumentation.KAFKA_CONNECTED.set(value)
