"""`salesflow stream migrate --to NAMESPACE`: a namespace's history into a new namespace, for
changing the partition count.

A sale's home partition is `crc32(sale_id) % partitions` and every table of the stream app is
partitioned the same way, so the partition count of a namespace cannot change in place (a
worker refuses to start when it finds one). Instead: stop the producers and the workers, and
copy into a new, empty namespace created with the new count
- the dimension records, as they are (latest per key), and
- every accepted sale, from `<ns>.sales.valid`, packed per its new home partition;
then point the producers, workers and `marts follow` at the new namespace. The workers accept
the copied sales again (their ids meet on their new home partitions), so the new namespace
holds exactly the old one's accepted sales; the dead letters stay where they are (replay them
into the new namespace with `dlq replay` once their cause is fixed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from salesflow.codec import codec_for
from salesflow.delivery import Sender
from salesflow.errors import ConfigError
from salesflow.kafka import (
    admin,
    check_reachable,
    ensure_topics,
    partition_for,
    read_all,
    topic_partitions,
)
from salesflow.sale import Sale
from salesflow.settings import Settings
from salesflow.topics import Topics

BATCH = 500


@dataclass(frozen=True)
class Migration:
    dimension_records: int
    sales: int
    partitions: int

    def line(self, source: str, target: str) -> str:
        return (f"copied {self.dimension_records} dimension records and {self.sales} accepted "
                f"sales from {source} into {target} ({self.partitions} partitions); start "
                f"workers with SALESFLOW_NAMESPACE={target}")


def accepted_sales(settings: Settings) -> Iterator[Sale]:
    """Every accepted sale of the namespace, from its valid-sales history."""
    codec = codec_for(settings)
    for msg in read_all(settings, Topics(settings.namespace).valid_sales):
        for entry in codec.decode(msg.value()).record["messages"]:
            sales = codec.decode_sales(entry["message"]).sales
            yield from (sales[i] for i in entry["accepted"])


def migrate(settings: Settings, target: str, partitions: int) -> Migration:
    """Copy dimensions and accepted sales into the new, empty namespace `target`."""
    source = Topics(settings.namespace)
    into = settings.model_copy(update={"namespace": target, "partitions": partitions})
    dest = Topics(target)
    if target == settings.namespace:
        raise ConfigError("the target namespace must be a new one")
    check_reachable(settings)
    existing = admin(settings).list_topics(timeout=10).topics
    if source.valid_sales not in existing:
        raise ConfigError(f"namespace {settings.namespace} has no accepted sales to copy "
                          f"({source.valid_sales} does not exist)")
    if any(dest.owns(name) for name in existing):
        raise ConfigError(f"namespace {target} already has topics: migrate into a new one")
    ensure_topics(into)
    if topic_partitions(into, dest.sales) != partitions:
        raise ConfigError(f"{dest.sales} was not created with {partitions} partitions")
    codec = codec_for(into)
    dims = sales = 0
    with Sender(into) as sender:
        for name, topic in source.dims.items():
            latest = {}
            for msg in read_all(settings, topic):
                latest[msg.key()] = msg.value()
            for key, value in latest.items():
                if value is not None:
                    sender.send(dest.dim(name), value, key=key)
                    dims += 1
        pending: dict[int, list[Sale]] = {}
        for sale in accepted_sales(settings):
            home = partition_for(sale.sale_id, partitions)
            batch = pending.setdefault(home, [])
            batch.append(sale)
            if len(batch) >= BATCH:
                _send(sender, codec, dest.sales, home, batch)
                sales += len(batch)
                batch.clear()
        for home, batch in pending.items():
            if batch:
                _send(sender, codec, dest.sales, home, batch)
                sales += len(batch)
        sender.close()
    return Migration(dims, sales, partitions)


def _send(sender: Sender, codec, topic: str, partition: int, sales: list[Sale]) -> None:
    value = codec.encode("sale_batch", {"sales": [s.to_record() for s in sales]})
    sender.send(topic, value, partition=partition, records=len(sales))
