"""`salesflow produce sales FILE...`: CSV sales files to `<ns>.sales`.

The main process reads CSV rows (quoted commas, quotes, newlines and any Unicode survive: the
`csv` module parses them) and sends; a pool of processes parses, checks and Avro-encodes chunks
of rows, so both cores work. Sales are packed per partition into `SaleBatch` messages of up to
`batch_size` sales: per-message costs (Kafka, Faust) are then paid once per batch. Each sale's
partition is `crc32(sale_id) % partitions` (see `salesflow.kafka`), so a replayed `sale_id`
always meets its first copy. Rows that cannot be sales go to the dead-letter topic with the
file, the line and the row itself.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from producers.rows import SALE_FIELDS, parse_sale_for_wire
from salesflow.codec import Codec, codec_for
from salesflow.dead_letters import DeadLetter, Reason, Rejection
from salesflow.delivery import Sender
from salesflow.errors import ConfigError
from salesflow.kafka import check_reachable, ensure_topics, partition_for, topic_partitions
from salesflow.settings import Settings
from salesflow.topics import Topics

CHUNK_BYTES = 1 << 20


@dataclass
class ProduceSummary:
    read: int = 0
    sent: int = 0
    dead_lettered: int = 0
    files: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"read {self.read} / sent {self.sent} / dead-lettered {self.dead_lettered}"


@dataclass(frozen=True, slots=True)
class Chunk:
    """Whole CSV records of one file for a pool worker, as raw bytes."""

    source: str
    header: list[str]
    data: bytes
    first_line: int  # the file line on which `data` starts
    id_prefix: str | None  # set when the file has no sale_id column
    partitions: int
    batch_size: int


@dataclass(slots=True)
class EncodedChunk:
    batches: list[tuple[int, bytes, int]]  # (partition, SaleBatch message, sales in it)
    rejected: list[DeadLetter]
    rows: int


_codec: Codec | None = None


def _init_worker(settings: Settings) -> None:
    """Pool initializer: the worker's codec follows the settings (registry or not)."""
    global _codec
    _codec = codec_for(settings)


def _worker_codec() -> Codec:
    global _codec
    if _codec is None:
        _codec = Codec()
    return _codec


def encode_chunk(chunk: Chunk) -> EncodedChunk:
    """Parse, check and pack one chunk (runs in a pool worker; pure but for the codec)."""
    codec = _worker_codec()
    header, width = chunk.header, len(chunk.header)
    by_partition: dict[int, list[dict]] = {}
    rejected: list[DeadLetter] = []
    reader = csv.reader(io.StringIO(chunk.data.decode("utf-8"), newline=""))
    rows, line = 0, chunk.first_line
    for row in reader:
        row_line, line = line, chunk.first_line + reader.line_num
        if not row:  # a blank line
            continue
        rows += 1
        values = dict(zip(header, row, strict=False))
        if chunk.id_prefix is not None:
            values["sale_id"] = f"{chunk.id_prefix}-{row_line}"
        parsed = (parse_sale_for_wire(values) if len(row) == width
                  else Rejection(Reason.UNPARSEABLE, f"{len(row)} fields, header has {width}"))
        if isinstance(parsed, Rejection):
            sale_id = values.get("sale_id") or None
            rejected.append(DeadLetter(
                value=_csv_line(row), key=sale_id.encode() if sale_id else None,
                reason=parsed.reason, message=parsed.message, source=chunk.source,
                line=row_line, sale_id=sale_id))
            continue
        part = partition_for(parsed["sale_id"], chunk.partitions)
        by_partition.setdefault(part, []).append(parsed)
    batches = []
    size = chunk.batch_size
    for part, sales in by_partition.items():
        for start in range(0, len(sales), size):
            packed = sales[start:start + size]
            batches.append((part, codec.encode("sale_batch", {"sales": packed}), len(packed)))
    return EncodedChunk(batches, rejected, rows)


def _csv_line(row: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue().encode("utf-8")


def read_chunks(path: Path, partitions: int, batch_size: int,
                chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """Cut one CSV file into chunks of whole records, without parsing it.

    A newline ends a record exactly when the quotes before it are balanced (a quote inside a
    quoted field is doubled), so counting quotes, which runs at C speed, finds safe cuts;
    the pool workers do all the parsing.
    """
    content = path.read_bytes()
    if content.startswith(b"\xef\xbb\xbf"):
        content = content[3:]
    header_end, quotes = _record_end(content, 0, 0)
    header = [h.strip() for h in next(csv.reader([content[:header_end].decode("utf-8")]), [])]
    missing = [f for f in SALE_FIELDS if f != "sale_id" and f not in header]
    if missing:
        raise ConfigError(f"{path}: not a sales file, missing columns {', '.join(missing)}")
    # Without a sale_id column, ids derive from the file's content and the line number, so
    # sending the same file twice sends the same ids (and never double counts).
    id_prefix = None if "sale_id" in header else hashlib.sha256(content).hexdigest()[:20]
    start, line = header_end, 1 + content.count(b"\n", 0, header_end)
    while start < len(content):
        end, quotes = _record_end(content, start, quotes, start + chunk_bytes)
        yield Chunk(str(path), header, content[start:end], line, id_prefix, partitions,
                    batch_size)
        line += content.count(b"\n", start, end)
        start = end


def _record_end(content: bytes, start: int, quotes: int, pos: int | None = None,
                ) -> tuple[int, int]:
    """The offset just after the first newline at or after `pos` that ends a record, and
    the number of quotes before it; `quotes` counts those before `start`."""
    pos = start if pos is None else min(pos, len(content))
    quotes += content.count(b'"', start, pos)
    while True:
        nl = content.find(b"\n", pos)
        if nl < 0:
            return len(content), quotes
        quotes += content.count(b'"', pos, nl)
        if quotes % 2 == 0:
            return nl + 1, quotes
        pos = nl + 1


def produce_sales(settings: Settings, files: list[Path], *, batch_size: int = 500,
                  workers: int | None = None,
                  on_progress: Callable[[int], None] | None = None) -> ProduceSummary:
    """Send sales files; raise `DeliveryError` if anything was not acknowledged."""
    topics = Topics(settings.namespace)
    check_reachable(settings)
    ensure_topics(settings, [topics.sales, topics.dlq])  # only what it writes (ACLs)
    partitions = topic_partitions(settings, topics.sales)
    summary = ProduceSummary(files=[str(f) for f in files])
    workers = workers or max(1, (os.cpu_count() or 1))
    with Sender(settings) as sender, ProcessPoolExecutor(
            workers, initializer=_init_worker, initargs=(settings,)) as pool:
        for path in files:
            chunks = read_chunks(path, partitions, batch_size)
            for encoded in ordered_map(pool, encode_chunk, chunks, window=2 * workers):
                for part, payload, count in encoded.batches:
                    sender.send(topics.sales, payload, partition=part, records=count)
                for dead in encoded.rejected:
                    sender.send(topics.dlq, dead.value, key=dead.key, headers=dead.headers())
                summary.read += encoded.rows
                summary.dead_lettered += len(encoded.rejected)
                if on_progress:
                    on_progress(encoded.rows)
        sender.close()
        summary.sent = sender.delivered_by_topic[topics.sales]
    return summary


def ordered_map(pool: Executor, fn: Callable, items: Iterable, window: int) -> Iterator:
    """`pool.map` that keeps at most `window` items in flight (Executor.map reads them all)."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
