"""The stream app's Prometheus metrics, in one place, updated at the I/O edge (the agent)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

RECORDS_IN = Counter("salesflow_stream_records_in_total", "Sale records read from the sales topic")
ACCEPTED = Counter("salesflow_stream_accepted_total", "Sales accepted into the aggregates")
REPLAYS = Counter("salesflow_stream_exact_replays_total",
                  "Exact replays of an accepted sale, dropped")
DEAD_LETTERED = Counter("salesflow_stream_dead_lettered_total",
                        "Records sent to the dead-letter topic", ["reason"])
PENDING = Gauge("salesflow_stream_parked_sales", "Sales waiting for a dimension record")
MESSAGE_SECONDS = Histogram("salesflow_stream_message_processing_seconds",
                            "Time to process one message of the sales topic",
                            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
WORKER_UP = Gauge("salesflow_stream_worker_up", "1 while this stream worker runs")


def observe(counts: Mapping[str, int], seconds: float) -> None:
    """Record what one message did (the processor's counts)."""
    for name, value in counts.items():
        if not value:
            continue
        if name == "in":
            RECORDS_IN.inc(value)
        elif name == "accepted":
            ACCEPTED.inc(value)
        elif name == "replays":
            REPLAYS.inc(value)
        elif name == "pending":
            PENDING.inc(value)
        elif name.startswith("dead_lettered:"):
            DEAD_LETTERED.labels(reason=name.split(":", 1)[1]).inc(value)
    MESSAGE_SECONDS.observe(seconds)
