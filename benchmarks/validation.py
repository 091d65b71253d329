"""Validation alone: the stream app's per-message work without Faust, next to a bare loop.

Both loops consume the same sales topic with confluent-kafka in this process: the bare loop
decodes every message; the other also runs `Processor.handle` (dedup, the contract's rules,
the watermarked aggregates) on in-memory tables. The ratio shows what validation and state
cost on top of consuming and decoding; Faust's own per-message cost comes on top of that
(see benchmarks/stream.py).

    python benchmarks/validation.py [--rows 500000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from producers.generate import GenerateSpec, generate
from producers.sales import produce_sales
from salesflow.codec import Codec
from salesflow.kafka import read_all
from salesflow.settings import Settings
from salesflow.topics import Topics
from stream_app.processor import Incoming, Processor, Tables
from stream_app.validation import Dimensions

STORES = {121: (1, 2, 3), 122: (4, 5, 6), 123: (7, 8, 9), 124: (10, 11, 12, 13)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    args = parser.parse_args()
    settings = Settings(namespace=f"bench{uuid.uuid4().hex[:8]}")
    spec = GenerateSpec(rows=args.rows, bad_fraction=0.01)
    with tempfile.TemporaryDirectory() as tmp:
        produce_sales(settings, [generate(Path(tmp), spec)])
    topic = Topics(settings.namespace).sales
    codec = Codec()

    started = time.perf_counter()
    sales = 0
    for msg in read_all(settings, topic):
        decoded = codec.decode(msg.value())
        sales += len(decoded.record["sales"])
    bare = time.perf_counter() - started

    products = {"quaker oats", "sugar", "maida", "besan", "refined oil", "clinic plus",
                "dantkanti", "nutrella"}
    dims = Dimensions(set(range(1, spec.customers + 1)), set(STORES),
                      {p for people in STORES.values() for p in people}, products)
    today = datetime.now(UTC).date()
    processor = Processor(codec, dims, retry_seconds=0, today=lambda: today)
    stores: dict[str, dict] = {n: {} for n in ("seen", "customers", "team", "parked", "counts")}
    started = time.perf_counter()
    accepted = 0
    for msg in read_all(settings, topic):
        tables = Tables(**stores)
        fx = processor.handle(Incoming(topic, msg.partition(), msg.offset(), msg.key(),
                                       msg.value(), {}), tables)
        tables.commit()
        accepted += fx.counts["accepted"]
    validated = time.perf_counter() - started

    print(f"sales {sales:,} ({accepted:,} accepted)")
    print(f"bare consume + decode:                  {sales / bare:10,.0f} sales/s")
    print(f"consume + decode + validate + aggregate: {sales / validated:10,.0f} sales/s")
    print(f"ratio (validation / bare loop):          {bare / validated:10.2f}")


if __name__ == "__main__":
    main()
