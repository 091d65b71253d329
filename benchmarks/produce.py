"""Producer throughput: `produce sales` end to end from CSV vs a bare confluent-kafka loop.

Both run in this process against the same broker, so the ratio means something on a noisy
machine; absolute rates do not. The bare loop sends the same sales, pre-encoded (no CSV, no
parsing, no Avro in the loop): once as one message per sale (the usual baseline), once as the
same packed SaleBatch messages that `produce sales` sends.

    python benchmarks/produce.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

from producers.generate import GenerateSpec, write_sales
from producers.sales import encode_chunk, produce_sales, read_chunks
from salesflow.codec import Codec
from salesflow.kafka import client_config, ensure_topics
from salesflow.settings import Settings
from salesflow.topics import Topics


def bare_loop(settings: Settings, topic: str, payloads: list[tuple[int, bytes]]) -> float:
    """Seconds to send and get acknowledged every payload (same producer settings)."""
    producer = Producer(client_config(settings, **{"enable.idempotence": True, "acks": "all",
                                                  "linger.ms": 20}))
    started = time.perf_counter()
    for part, value in payloads:
        while True:
            try:
                producer.produce(topic, value, partition=part)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    settings = Settings(namespace=f"bench{uuid.uuid4().hex[:8]}")
    ensure_topics(settings)
    topics = Topics(settings.namespace)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sales.csv"
        write_sales(path, GenerateSpec(rows=args.rows))

        started = time.perf_counter()
        summary = produce_sales(settings, [path])
        ours = time.perf_counter() - started

        codec = Codec()
        batches, singles = [], []
        for chunk in read_chunks(path, settings.partitions, 500):
            encoded = encode_chunk(chunk)
            for part, payload, _ in encoded.batches:
                batches.append((part, payload))
                for sale in codec.decode(payload).record["sales"]:
                    singles.append((part, codec.encode("sale", sale)))
    bare_single = bare_loop(settings, topics.sales, singles)
    bare_batch = bare_loop(settings, topics.sales, batches)
    n = summary.sent
    print(f"rows {args.rows}: sent {summary.sent}, dead-lettered {summary.dead_lettered}")
    print(f"produce sales (CSV → Avro → Kafka):      {n / ours:10,.0f} sales/s")
    print(f"bare loop, one message per sale:          {n / bare_single:10,.0f} sales/s "
          f"({sum(len(v) for _, v in singles) / len(singles):.0f} B/message)")
    print(f"bare loop, the same packed messages:      {n / bare_batch:10,.0f} sales/s")
    print(f"ratio produce / bare single-sale loop:    {bare_single / ours:10.2f}")
    print(f"ratio produce / bare packed loop:         {bare_batch / ours:10.2f}")


if __name__ == "__main__":
    main()
