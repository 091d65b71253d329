"""Every Prometheus metric of salesflow, in one place; incremented at the I/O edges.

Names follow Prometheus conventions: the `salesflow_` prefix, units in the name, `_total`
for counters. Each process exposes its own registry on `/metrics` (the stream worker and
`salesflow marts follow`, each on its `SALESFLOW_METRICS_PORT`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

from salesflow.anomalies import RULES

RECORDS_IN = Counter("salesflow_stream_records_in_total",
                     "Sale records read on their home partition of the sales topic")
REROUTED = Counter("salesflow_stream_rerouted_total",
                   "Sales read on another partition than their home one, forwarded there")
ACCEPTED = Counter("salesflow_stream_accepted_total", "Sales accepted into the aggregates")
REPLAYS = Counter("salesflow_stream_exact_replays_total",
                  "Exact replays of an accepted sale, dropped")
DEAD_LETTERED = Counter("salesflow_stream_dead_lettered_total",
                        "Records sent to the dead-letter topic", ["reason"])
PENDING = Gauge("salesflow_stream_parked_sales", "Sales waiting for a dimension record")
DIMENSION_DEAD_LETTERED = Counter("salesflow_stream_dimension_dead_lettered_total",
                                  "Unreadable dimension records sent to the dead-letter topic",
                                  ["reason"])
TRANSACTION_SECONDS = Histogram("salesflow_stream_transaction_seconds",
                                "Time from the start of a stream transaction to its commit",
                                buckets=(0.01, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30))
WORKER_UP = Gauge("salesflow_stream_worker_up", "1 while this stream worker runs")
EVENT_TO_PROCESSED = Histogram(
    "salesflow_stream_sale_age_seconds",
    "Age of a sale (its message timestamp) when the stream app accepted it",
    buckets=(0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300))
CONSUMER_LAG = Gauge("salesflow_consumer_lag_messages",
                     "Messages not yet processed, per topic partition", ["topic", "partition"])

# --- mart builder ---
FLUSH_SECONDS = Histogram("salesflow_mart_flush_duration_seconds",
                          "Duration of one mart flush (compute and write)",
                          buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60))
FLUSH_ROWS = Counter("salesflow_mart_rows_written_total", "Mart rows written by flushes",
                     ["mart"])
FLUSH_FAILURES = Counter("salesflow_mart_flush_failures_total", "Flushes that failed",
                         ["kind"])
LAST_FLUSH = Gauge("salesflow_mart_last_success_timestamp_seconds",
                   "Unix time of the last successful flush")
MART_ROWS = Gauge("salesflow_mart_rows", "Rows in each mart after the last flush", ["mart"])
FLUSH_LAG = Gauge("salesflow_mart_flush_lag_seconds",
                  "How late the latest flush started after it was due (0: on time; more: the "
                  "one before overran the interval, and flushes are not queued up)")
FRESHNESS = Gauge("salesflow_mart_freshness_seconds",
                  "Age of the newest sale reflected in the marts (its message timestamp), "
                  "now; NaN until this process has flushed")
ROWS_REFUSED = Counter("salesflow_mart_rows_refused_total",
                       "Mart rows the database refused (quarantined instead)", ["mart"])
QUARANTINED = Gauge("salesflow_mart_quarantined_rows",
                    "Mart rows in the quarantine after the last flush of this process",
                    ["mart"])
ANOMALIES_FLAGGED = Counter("salesflow_anomalies_flagged_total",
                            "Anomaly flags raised (rows new to sales_anomalies), by rule",
                            ["rule"])
RETRIES = Counter("salesflow_dependency_retries_total",
                  "Retries of a transient failure, by dependency", ["dependency"])
FAILURES = Counter("salesflow_dependency_failures_total",
                   "Operations that failed after their retries, by dependency", ["dependency"])

# --- dependencies and first-hour usability (salesflow_cli / librdkafka_log) ---
# Producers export no metrics: they are short-lived commands that no scrape would catch; what
# they send shows as salesflow_stream_records_in_total and in their own summary line.
KAFKA_CONNECTED = Gauge("salesflow_kafka_connected",
                        "1 while this process reaches a Kafka broker, 0 from its first "
                        "connection error until a broker is up again")
KAFKA_CONNECTED.set(1)
DEPENDENCIES = ("kafka", "database")
# Every labelled series exists from the start at 0, so that increase() sees its first
# increment (a series born at 1 never increases).
for _dependency in DEPENDENCIES:
    RETRIES.labels(dependency=_dependency)
    FAILURES.labels(dependency=_dependency)
for _kind in ("DatabaseUnavailable", "DatabaseRejected", "KafkaUnavailable"):
    FLUSH_FAILURES.labels(kind=_kind)
for _rule in RULES:
    ANOMALIES_FLAGGED.labels(rule=_rule)


def _init_reasons() -> None:
    from salesflow.dead_letters import Reason

    for reason in Reason:
        DEAD_LETTERED.labels(reason=reason.value)


_init_reasons()

_reflected_ms = 0


def marts_reflect(newest_ms: int) -> None:
    """The marts now reflect every sale up to this message timestamp (ms since the epoch)."""
    global _reflected_ms
    _reflected_ms = newest_ms


FRESHNESS.set_function(
    lambda: time.time() - _reflected_ms / 1000 if _reflected_ms else math.nan)


_SIMPLE = {"in": RECORDS_IN, "accepted": ACCEPTED, "replays": REPLAYS, "rerouted": REROUTED}


def observe(stats: Mapping[str, int], seconds: float) -> None:
    """Record what one committed transaction did (the processor's stats)."""
    for name, value in stats.items():
        if value <= 0:
            continue
        if name in _SIMPLE:
            _SIMPLE[name].inc(value)
        elif name.startswith("dead_lettered:"):
            DEAD_LETTERED.labels(reason=name.split(":", 1)[1]).inc(value)
        elif name.startswith("dimension_dead_lettered:"):
            DIMENSION_DEAD_LETTERED.labels(reason=name.split(":", 1)[1]).inc(value)
    TRANSACTION_SECONDS.observe(seconds)
