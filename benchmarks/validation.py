"""The stream app's per-sale work without Kafka's transactions, next to a bare loop.

Both loops consume the same sales topic with confluent-kafka in this process: the bare loop
decodes every message (fastavro, as the stream benchmark's baseline does); the other runs
`Processor.handle` (decode, home partition, dedup, the contract's rules, the aggregates and
the anomaly state) on `PartitionState`s over real RocksDB stores, committing each partition's
changes every 100 messages. The ratio shows what processing costs on top of consuming and
decoding; `benchmarks/stream.py` adds the transactions and the changelogs.

    python benchmarks/validation.py [--rows 500000] [--no-anomalies]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from producers.generate import PRODUCTS, STORES, GenerateSpec, generate
from producers.sales import produce_sales
from salesflow.codec import Codec
from salesflow.kafka import delete_namespace, read_all
from salesflow.sale import ProductPrice
from salesflow.settings import Settings
from salesflow.topics import Topics
from stream_app.processor import (
    DEFAULT_ANOMALY_RULES,
    AggregateCache,
    Incoming,
    Output,
    PartitionState,
    Processor,
)
from stream_app.store import PartitionStore
from stream_app.validation import StaticDimensions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--no-anomalies", action="store_true")
    args = parser.parse_args()
    settings = Settings(_env_file=None, namespace=f"bench{uuid.uuid4().hex[:8]}")
    spec = GenerateSpec(rows=args.rows, bad_fraction=0.01)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            produce_sales(settings, [generate(Path(tmp), spec)])
        run(settings, spec, not args.no_anomalies)
    finally:
        delete_namespace(settings, wait=False)


def run(settings: Settings, spec: GenerateSpec, anomalies: bool) -> None:
    topic = Topics(settings.namespace).sales
    codec = Codec()
    started = time.perf_counter()
    sales = 0
    for msg in read_all(settings, topic):
        decoded = codec.decode(msg.value())
        sales += len(decoded.record["sales"])
    bare = time.perf_counter() - started

    dims = StaticDimensions(set(range(1, spec.customers + 1)), set(STORES),
                            {p for people in STORES.values() for p in people},
                            {name: ProductPrice(int(price.replace(".", "")))
                             for name, price in PRODUCTS.items()})
    processor = Processor(codec, dims, settings.partitions, retry_seconds=0,
                          anomalies=DEFAULT_ANOMALY_RULES if anomalies else None)
    with tempfile.TemporaryDirectory() as tmp:
        stores = {p: PartitionStore(Path(tmp) / f"p{p}") for p in range(settings.partitions)}
        caches = {p: AggregateCache() for p in stores}

        def fresh(p: int) -> PartitionState:
            return PartitionState(p, stores[p], caches[p], anomalies=anomalies)

        def commit() -> None:
            for p, state in states.items():
                stores[p].write(state.changes(), state.seen_new.items(), {})
                state.committed()
                states[p] = fresh(p)
            out.clear()

        states = {p: fresh(p) for p in stores}
        out = Output()
        started = time.perf_counter()
        for n, msg in enumerate(read_all(settings, topic), 1):
            processor.handle(Incoming(topic, msg.partition(), msg.offset(), msg.key(),
                                      msg.value()), states[msg.partition()], out)
            if n % 100 == 0:
                commit()
        commit()
        processed = time.perf_counter() - started
        accepted = sum(state.counts.accepted for state in states.values())
        for store in stores.values():
            store.close()

    print(f"sales {sales:,} ({accepted:,} accepted)")
    print(f"bare consume + decode:                   {sales / bare:10,.0f} sales/s")
    print(f"consume + process (anomalies {'on' if anomalies else 'off'}):     "
          f"{sales / processed:10,.0f} sales/s")
    print(f"ratio (processing / bare loop):          {bare / processed:10.2f}")


if __name__ == "__main__":
    main()
