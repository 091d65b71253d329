"""Reading the stream app's `counts` table (its changelog): what every sales partition's
records became (`salesflow.tables.PartitionCounts`), for status, the demo and progress bars."""

from __future__ import annotations

from salesflow.kafka import read_all
from salesflow.settings import Settings
from salesflow.tables import COUNTS, COUNTS_KEY, PartitionCounts
from salesflow.topics import Topics


def counts_history(settings: Settings) -> dict[int, list[tuple[float, PartitionCounts]]]:
    """Every partition's counts records still on the changelog, with their commit times
    (seconds since the epoch), oldest first."""
    out: dict[int, list[tuple[float, PartitionCounts]]] = {}
    for msg in read_all(settings, Topics(settings.namespace).changelog(COUNTS)):
        if msg.key() == COUNTS_KEY and msg.value():
            out.setdefault(msg.partition(), []).append(
                (msg.timestamp()[1] / 1000, PartitionCounts.decode(msg.value())))
    return out


def partition_counts(settings: Settings) -> dict[int, PartitionCounts]:
    """The latest `PartitionCounts` of every sales partition."""
    return {p: h[-1][1] for p, h in counts_history(settings).items() if h}


def stream_totals(settings: Settings) -> PartitionCounts:
    """Every partition's counts, summed (zero when no worker has run yet)."""
    from salesflow.kafka import admin

    total = PartitionCounts()
    if Topics(settings.namespace).changelog(COUNTS) not in admin(settings).list_topics(
            timeout=10).topics:
        return total
    for counts in partition_counts(settings).values():
        total.add(counts)
    return total
