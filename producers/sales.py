"""`salesflow produce sales FILE...`: CSV sales files to `<ns>.sales`.

Every file is checked before anything is sent (UTF-8, the sales columns). The main process
then cuts each file into chunks of whole CSV records, exactly where the `csv` module's reader
ends them (`salesflow.parsing.record_cuts`: quoted fields may hold commas, quotes and line
breaks, and a quote inside an unquoted field is a plain character); a pool of processes
parses, checks and Avro-encodes the chunks, so both cores work. Sales are packed per
partition into `SaleBatch` messages of up to `batch_size` sales: per-message costs are then
paid once per batch. Each sale's partition is `crc32(sale_id) % partitions` (see
`salesflow.kafka`), so a replayed `sale_id` always meets its first copy. Rows that cannot be
sales (`missing_field`, `unparseable`, `out_of_bounds`) go to the dead-letter topic with the
file, the line and the row itself.

Ids of files without a `sale_id` column come from each row's parsed values and its occurrence
number among identical rows of the file (`producers.rows.derived_sale_id`). Chunks are encoded
in parallel, each counting occurrences from 1; the main process, which sees the chunks in file
order, has a chunk encoded again with the counts of earlier chunks in the rare case that it
repeats a row of an earlier chunk.

A broker outage is ridden out for `SALESFLOW_PRODUCER_OUTAGE_SECONDS` (waiting for a broker at
the start, and librdkafka's delivery timeout after), saying that it is waiting.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from producers.rows import (
    SALE_FIELDS,
    content_key,
    derived_sale_id,
    parse_sale_row,
    wire_record,
)
from salesflow.codec import Codec, codec_for
from salesflow.dead_letters import DeadLetter, Reason, Rejection, row_id
from salesflow.delivery import Sender
from salesflow.errors import InputError, KafkaUnavailable, ProduceFailed, SalesflowError
from salesflow.kafka import check_reachable, ensure_topics, partition_for, topic_partitions
from salesflow.parsing import allow_long_fields, header_end, line_ends, read_csv_bytes, record_cuts
from salesflow.settings import Settings
from salesflow.topics import Topics

CHUNK_BYTES = 1 << 20
# A dead letter carries its CSV row; a longer row (a broken file: no valid row comes near) is
# cut to this many bytes in the dead letter, and its message says so and where the row is.
MAX_DEAD_LETTER_ROW = 64 * 1024


@dataclass
class ProduceSummary:
    read: int = 0
    sent: int = 0
    dead_lettered: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = f"read {self.read} / sent {self.sent} / dead-lettered {self.dead_lettered}"
        if self.by_reason:
            text += " (" + ", ".join(f"{r} {n}" for r, n in sorted(self.by_reason.items())) + ")"
        return text


@dataclass(frozen=True, slots=True)
class Chunk:
    """Whole CSV records of one file for a pool worker, as raw bytes."""

    source: str
    header: list[str]
    data: bytes
    first_line: int  # the file line on which `data` starts
    derive_ids: bool  # the file has no sale_id column
    partitions: int
    batch_size: int
    earlier: dict[bytes, int] | None = None  # derive_ids: rows of these values before `data`


@dataclass(slots=True)
class EncodedChunk:
    batches: list[tuple[int, bytes, int]]  # (partition, SaleBatch message, sales in it)
    rejected: list[tuple[DeadLetter, bytes]]  # with the key of the row's content
    rows: int
    keys: Counter[bytes]  # derive_ids: sales per content key in this chunk


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
    allow_long_fields()
    codec = _worker_codec()
    header, width, derive = chunk.header, len(chunk.header), chunk.derive_ids
    earlier = chunk.earlier or {}
    by_partition: dict[int, list[dict]] = {}
    rejected: list[tuple[DeadLetter, bytes]] = []
    keys: Counter[bytes] = Counter()
    reader = csv.reader(io.StringIO(chunk.data.decode("utf-8"), newline=""))
    rows, line = 0, chunk.first_line
    try:
        for row in reader:
            row_line, line = line, chunk.first_line + reader.line_num
            if not row:  # a blank line
                continue
            rows += 1
            values = dict(zip(header, row, strict=False))
            sale = (parse_sale_row(values, with_id=not derive) if len(row) == width
                    else Rejection(Reason.UNPARSEABLE, f"{len(row)} fields, header has {width}"))
            if isinstance(sale, Rejection):
                rejected.append(_dead_letter(chunk.source, row_line, row, values, sale, derive))
                continue
            record = wire_record(sale)
            if derive:
                key = content_key(sale)
                keys[key] += 1
                record["sale_id"] = derived_sale_id(key, earlier.get(key, 0) + keys[key])
            part = partition_for(record["sale_id"], chunk.partitions)
            by_partition.setdefault(part, []).append(record)
    except csv.Error as exc:  # only a field longer than parsing.MAX_FIELD_CHARS
        raise InputError(f"{chunk.source}: line {line}: {exc}; nothing from this line on "
                         "was sent") from None
    batches = []
    size = chunk.batch_size
    for part, sales in by_partition.items():
        for start in range(0, len(sales), size):
            packed = sales[start:start + size]
            batches.append((part, codec.encode("sale_batch", {"sales": packed}), len(packed)))
    return EncodedChunk(batches, rejected, rows, keys)


def _dead_letter(source: str, line: int, row: list[str], values: dict[str, str],
                 why: Rejection, derive: bool) -> tuple[DeadLetter, bytes]:
    value = whole = _csv_line(row)
    message = why.message
    if len(value) > MAX_DEAD_LETTER_ROW:
        message += (f" (a row of {len(value):,} bytes: the first {MAX_DEAD_LETTER_ROW:,} are "
                    f"in this dead letter, the whole row is line {line} of {source})")
        value = value[:MAX_DEAD_LETTER_ROW]
    sale_id = None if derive else (values.get("sale_id") or None)
    if sale_id is not None and len(sale_id) > 255:
        sale_id = None
    dead = DeadLetter(value=value, key=sale_id.encode() if sale_id else None,
                      reason=why.reason, message=message, source=source, line=line,
                      sale_id=sale_id)
    return dead, hashlib.blake2b(whole, digest_size=16).digest()


def _csv_line(row: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue().encode("utf-8")


@dataclass(frozen=True, slots=True)
class SalesFile:
    """A checked sales file: UTF-8, with the sales columns."""

    path: Path
    content: bytes  # without a byte-order mark
    header: list[str]
    body: int  # where the first record after the header starts

    @property
    def derive_ids(self) -> bool:
        return "sale_id" not in self.header


def open_sales_file(path: Path) -> SalesFile:
    """Read and check one file; `InputError` (file, line, what to do) when it cannot be sent."""
    content = read_csv_bytes(path)
    body = header_end(content)
    allow_long_fields()
    header = [h.strip() for h in next(csv.reader(
        io.StringIO(content[:body].decode("utf-8"), newline="")), [])]
    missing = [f for f in SALE_FIELDS if f != "sale_id" and f not in header]
    if missing:
        raise InputError(f"{path}: not a sales file, missing columns {', '.join(missing)}")
    return SalesFile(path, content, header, body)


def read_chunks(path: Path | SalesFile, partitions: int, batch_size: int,
                chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """Cut one CSV file into chunks of whole records, where the csv module ends them."""
    checked = path if isinstance(path, SalesFile) else open_sales_file(path)
    content = checked.content
    start, line = checked.body, 1 + line_ends(content, 0, checked.body)
    for end in record_cuts(content, start, chunk_bytes):
        yield Chunk(str(checked.path), checked.header, content[start:end], line,
                    checked.derive_ids, partitions, batch_size)
        line += line_ends(content, start, end)
        start = end


Wait = Callable[[str], None]


def connect(settings: Settings, writes: list[str], on_wait: Wait | None = None) -> int:
    """Wait (at most `producer_outage_seconds`) until a broker answers and the topics the
    producer `writes` exist (only those: a producer's ACLs allow no others); the number of
    partitions of `<ns>.sales`."""
    bound = settings.producer_outage_seconds
    started = time.monotonic()
    while True:
        try:
            check_reachable(settings, timeout=min(5.0, bound))
            ensure_topics(settings, writes)
            return topic_partitions(settings, Topics(settings.namespace).sales)
        except KafkaUnavailable as exc:
            waited = time.monotonic() - started
            if waited >= bound:
                raise KafkaUnavailable(
                    f"no Kafka broker answered at {settings.kafka_bootstrap} within "
                    f"{bound:.0f}s (SALESFLOW_PRODUCER_OUTAGE_SECONDS); start one with "
                    "`salesflow stack up`") from exc
            if on_wait:
                on_wait(f"waiting for Kafka at {settings.kafka_bootstrap}: no broker has "
                        f"answered for {waited:.0f}s (giving up after {bound:.0f}s)")
            time.sleep(min(1.0, max(0.0, bound - waited)))


def produce_sales(settings: Settings, files: list[Path], *, batch_size: int = 500,
                  workers: int | None = None,
                  on_progress: Callable[[int], None] | None = None,
                  on_wait: Wait | None = None) -> ProduceSummary:
    """Send sales files. Files that cannot be read fail before anything is sent
    (`InputError`); a failure part-way raises `ProduceFailed` with what was done so far."""
    checked = [open_sales_file(path) for path in files]
    summary = ProduceSummary(files=[str(f) for f in files])
    topics = Topics(settings.namespace)
    partitions = connect(settings, [topics.sales, topics.dlq], on_wait)
    workers = workers or max(1, (os.cpu_count() or 1))
    sender = Sender(settings, delivery_timeout_s=settings.producer_outage_seconds,
                    on_wait=on_wait)
    try:
        with ProcessPoolExecutor(workers, initializer=_init_worker,
                                 initargs=(settings,)) as pool:
            for sales_file in checked:
                _send_file(pool, sender, topics, sales_file, partitions, batch_size,
                           summary, on_progress, window=2 * workers)
        sender.close()
    except (SalesflowError, BrokenProcessPool) as exc:
        sender.abandon()
        summary.sent = sender.delivered_by_topic[topics.sales]
        cause = str(exc) if isinstance(exc, SalesflowError) else "a parsing process died"
        raise ProduceFailed(f"{cause}; so far {summary.line()}. Sending the same files "
                            "again never double counts") from exc
    summary.sent = sender.delivered_by_topic[topics.sales]
    return summary


def _send_file(pool: Executor, sender: Sender, topics: Topics, sales_file: SalesFile,
               partitions: int, batch_size: int, summary: ProduceSummary,
               on_progress: Callable[[int], None] | None, window: int) -> None:
    for encoded in encode_file(pool, sales_file, partitions, batch_size, window):
        for part, payload, count in encoded.batches:
            sender.send(topics.sales, payload, partition=part, records=count)
        for dead, _ in encoded.rejected:
            sender.send(topics.dlq, dead.value, key=dead.key, headers=dead.headers())
            summary.by_reason[dead.reason.value] += 1
        summary.read += encoded.rows
        summary.dead_lettered += len(encoded.rejected)
        if on_progress:
            on_progress(encoded.rows)
        sender.raise_if_failed()  # stop reading once the broker refuses or times out


def encode_file(pool: Executor, sales_file: SalesFile, partitions: int, batch_size: int,
                window: int, chunk_bytes: int = CHUNK_BYTES) -> Iterator[EncodedChunk]:
    """The file's chunks encoded by `pool`, in file order, with their final ids: derived
    sale ids and the dead letters' `row_id`s count occurrences across the whole file."""
    seen: Counter[bytes] = Counter()  # derived ids: sales per content key so far
    rejected: Counter[bytes] = Counter()  # dead letters per row content so far
    chunks = read_chunks(sales_file, partitions, batch_size, chunk_bytes)
    for chunk, encoded in ordered_map(pool, encode_chunk, chunks, window=window):
        if chunk.derive_ids:
            earlier = {k: seen[k] for k in encoded.keys if k in seen}
            if earlier:  # rows that repeat rows of earlier chunks: count on from there
                encoded = pool.submit(encode_chunk, replace(chunk, earlier=earlier)).result()
            seen.update(encoded.keys)
        numbered = []
        for dead, key in encoded.rejected:
            rejected[key] += 1
            numbered.append((replace(dead, row_id=row_id(key, rejected[key])), key))
        encoded.rejected = numbered
        yield encoded


T = TypeVar("T")
R = TypeVar("R")


def ordered_map(pool: Executor, fn: Callable[[T], R], items: Iterable[T],
                window: int) -> Iterator[tuple[T, R]]:
    """(item, fn(item)) in order, computed by `pool` with at most `window` items in flight
    (Executor.map reads them all)."""
    pending: deque[tuple[T, Future[R]]] = deque()
    for item in items:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            item, future = pending.popleft()
            yield item, future.result()
    while pending:
        item, future = pending.popleft()
        yield item, future.result()
