"""`salesflow dlq show` / `salesflow dlq replay`: read the dead-letter topic, send letters back.

Two kinds of dead letter sit on `<ns>.sales.dlq` (see `salesflow.dead_letters`):
- stream-side: the value is the sale's Avro bytes (single-object encoding, `C3 01` ...), the
  headers name the sales-topic partition and offset it came from. Replay re-sends the same
  bytes and key to `<ns>.sales`, on the partition in the `partition` header (else
  `crc32(sale_id) % partitions`), so the stream app validates it again; the `sale_id` meets
  every earlier copy there, so a second replay of an accepted sale is an exact replay.
- producer-side: the value is the original CSV row (`missing_field`, `unparseable`), headers
  name the file and line. Such a row cannot pass unchanged: replay skips it and says so
  (fix the file and send it again; its `sale_id` keeps that idempotent).
Raw garbage (`undecodable`, not Avro, or Avro that today's schemas still cannot read) is
skipped as well: sending it again could only dead-letter it again.

Reading and filtering are pure functions over `DeadLetter`s so they are unit-tested; the
Kafka I/O is `read_letters` and `replay`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from salesflow.codec import SINGLE_OBJECT_MAGIC, Codec, codec_for
from salesflow.dead_letters import DeadLetter, Reason
from salesflow.errors import ConfigError, DecodeError, KafkaUnavailable
from salesflow.settings import Settings
from salesflow.topics import Topics

# Why a dead letter is not replayed (the summary line prints these).
SKIP_PRODUCER_SIDE = "producer-side CSV row(s) (fix the file and send it again)"
SKIP_UNDECODABLE = "undecodable (no sale the current schemas can read)"
SKIP_DUPLICATE = "identical to another letter of this replay"


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter and where it sits on the dead-letter topic."""

    dead: DeadLetter
    dlq_partition: int
    dlq_offset: int


# --- pure: classification, filtering, formatting -------------------------------------------

def parse_reason(reason: str | None) -> Reason | None:
    """The reason code of `--reason`, or a one-line error listing the valid ones."""
    if reason is None:
        return None
    try:
        return Reason(reason.strip().lower())
    except ValueError:
        raise ConfigError(f"unknown reason {reason!r}; one of: "
                          f"{', '.join(r.value for r in Reason)}") from None


def select(letters: Iterable[Letter], reason: Reason | None = None) -> list[Letter]:
    """The letters of one reason (all when None), oldest first (rejection time, then place)."""
    chosen = [x for x in letters if reason is None or x.dead.reason == reason]
    return sorted(chosen, key=lambda x: (x.dead.rejected_at, x.dlq_partition, x.dlq_offset))


def is_producer_side(dead: DeadLetter) -> bool:
    """A CSV row rejected by a producer: it has a file line and no sales-topic offset."""
    return dead.line is not None or (dead.offset is None and
                                     not dead.value.startswith(SINGLE_OBJECT_MAGIC))


def origin(dead: DeadLetter) -> str:
    """Where the rejected record came from: `file:line` or `topic/partition/offset`."""
    if dead.line is not None:
        return f"{dead.source}:{dead.line}"
    if dead.partition is not None or dead.offset is not None:
        part = "?" if dead.partition is None else dead.partition
        off = "?" if dead.offset is None else dead.offset
        return f"{dead.source}/{part}/{off}"
    return dead.source or "?"


def preview(dead: DeadLetter, width: int = 60) -> str:
    """A short printable view of the value: the CSV row, or the size of binary bytes."""
    if is_producer_side(dead):
        text = dead.value.decode("utf-8", "replace").replace("\n", "⏎")
        return text if len(text) <= width else text[:width - 1] + "…"
    kind = "Avro" if dead.value.startswith(SINGLE_OBJECT_MAGIC) else "binary"
    return f"<{len(dead.value)} bytes {kind}>"


def when(rejected_at: str) -> str:
    """The rejection time, short: `2026-11-26 03:55:48` in UTC (the raw text if unreadable)."""
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(rejected_at)
    except ValueError:
        return rejected_at or "-"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def decode_sales(dead: DeadLetter, codec: Codec | None = None) -> list[dict[str, Any]] | None:
    """The sale(s) of a stream-side letter, decoded from its Avro bytes (None: not a sale)."""
    if is_producer_side(dead):
        return None
    try:
        decoded = (codec or Codec()).decode(dead.value)
    except DecodeError:
        return None
    if decoded.name == "sale_batch":
        return list(decoded.record["sales"])
    if decoded.name == "sale":
        return [decoded.record]
    return [decoded.record | {"record": decoded.name}]  # a dimension record


def summary(dead: DeadLetter, codec: Codec | None = None) -> str:
    """The rejected record in one short line: the CSV row, the decoded sale, or its size."""
    sales = decode_sales(dead, codec)
    if not sales:
        return preview(dead)
    s = sales[0]
    if "sale_id" not in s:
        return ", ".join(f"{k}={v}" for k, v in s.items() if v is not None)[:120]
    text = (f"customer {s['customer_id']}, store {s['store_id']}, "
            f"person {s['sales_person_id']}, {s['product_name']} x{s['quantity']} "
            f"@ {s['price']} = {s['total_cost']} on {s['sales_date']}")
    return text + (f" (+{len(sales) - 1} more)" if len(sales) > 1 else "")


def as_dict(letter: Letter, codec: Codec | None = None) -> dict[str, Any]:
    """A dead letter for `--json`: every header, and the value as the CSV row, the decoded
    sale(s), or (when nothing can read it) hex."""
    dead = letter.dead
    out: dict[str, Any] = {
        "reason": dead.reason.value,
        "sale_id": dead.sale_id,
        "message": dead.message,
        "origin": origin(dead),
        "source": dead.source,
        "partition": dead.partition,
        "offset": dead.offset,
        "line": dead.line,
        "rejected_at": dead.rejected_at,
        "fingerprint": dead.fingerprint.hex() if dead.fingerprint else None,
        "side": "producer" if is_producer_side(dead) else "stream",
        "key": dead.key.decode("utf-8", "replace") if dead.key is not None else None,
        "dlq_partition": letter.dlq_partition,
        "dlq_offset": letter.dlq_offset,
    }
    if is_producer_side(dead):
        out["row"] = dead.value.decode("utf-8", "replace")
        return out
    sales = decode_sales(dead, codec)  # None: nothing today's schemas can read
    out["records"] = None if sales is None else [
        {k: v if v is None or isinstance(v, int | str) else str(v) for k, v in s.items()}
        for s in sales]
    out["value_hex"] = dead.value.hex()
    return out


def reason_counts(letters: Iterable[Letter]) -> Counter[str]:
    return Counter(x.dead.reason.value for x in letters)


@dataclass
class ReplayPlan:
    """What a replay sends: (key, value, partition or None), and what it skips and why."""

    send: list[tuple[bytes | None, bytes, int | None]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def plan_replay(letters: Sequence[Letter], partitions: int,
                codec: Codec | None = None) -> ReplayPlan:
    """Choose what to send back to the sales topic; identical letters are sent once."""
    from salesflow.kafka import partition_for

    codec = codec or Codec()
    plan = ReplayPlan()
    sent: set[tuple[bytes | None, bytes, int | None]] = set()
    for letter in letters:
        dead = letter.dead
        if is_producer_side(dead):
            plan.skipped[SKIP_PRODUCER_SIDE] += 1
            continue
        try:
            decoded = codec.decode(dead.value)
        except DecodeError:
            plan.skipped[SKIP_UNDECODABLE] += 1
            continue
        if decoded.name not in ("sale", "sale_batch"):
            plan.skipped[SKIP_UNDECODABLE] += 1
            continue
        if dead.partition is not None and 0 <= dead.partition < partitions:
            partition: int | None = dead.partition
        elif dead.sale_id:
            partition = partition_for(dead.sale_id, partitions)
        elif dead.key:
            partition = partition_for(dead.key.decode("utf-8", "replace"), partitions)
        else:
            partition = None
        item = (dead.key, dead.value, partition)
        if item in sent:
            plan.skipped[SKIP_DUPLICATE] += 1
            continue
        sent.add(item)
        plan.send.append(item)
    return plan


@dataclass
class ReplaySummary:
    selected: int
    replayed: int
    skipped: Counter[str]
    topic: str
    dry_run: bool = False
    reason: Reason | None = None

    def line(self) -> str:
        what = f"{self.selected} dead letter(s)" + \
            (f" with reason {self.reason.value}" if self.reason else "")
        verb = "would replay" if self.dry_run else "replayed"
        text = f"{what}: {verb} {self.replayed} to {self.topic}"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {why}" for why, n in
                                            sorted(self.skipped.items()))
        return text


# --- Kafka I/O -----------------------------------------------------------------------------

def read_letters(settings: Settings) -> list[Letter]:
    """Every dead letter on `<ns>.sales.dlq`, unordered; none when the topic does not exist."""
    from salesflow.kafka import admin, check_reachable, read_all

    check_reachable(settings)
    topic = Topics(settings.namespace).dlq
    try:
        existing = admin(settings).list_topics(timeout=10).topics
    except Exception as exc:  # confluent_kafka.KafkaException
        raise KafkaUnavailable(f"no Kafka broker answered at {settings.kafka_bootstrap}") \
            from exc
    if topic not in existing:
        return []
    out = []
    for msg in read_all(settings, topic):
        try:
            dead = DeadLetter.from_message(msg.value(), msg.key(), msg.headers())
        except ValueError:  # a reason code this release does not know
            dead = DeadLetter.from_message(msg.value(), msg.key(), [
                (k, v) for k, v in (msg.headers() or []) if k != "reason"])
        out.append(Letter(dead, msg.partition(), msg.offset()))
    return out


def replay(settings: Settings, reason: str | Reason | None = None,
           dry_run: bool = False) -> ReplaySummary:
    """Send the chosen stream-side dead letters back to `<ns>.sales`; delivery is checked."""
    from salesflow.delivery import Sender
    from salesflow.kafka import topic_partitions

    wanted = reason if isinstance(reason, Reason) else parse_reason(reason)
    topics = Topics(settings.namespace)
    letters = select(read_letters(settings), wanted)
    partitions = topic_partitions(settings, topics.sales) if letters else settings.partitions
    plan = plan_replay(letters, partitions, codec_for(settings))
    summary = ReplaySummary(len(letters), len(plan.send), plan.skipped, topics.sales,
                            dry_run, wanted)
    if dry_run or not plan.send:
        return summary
    with Sender(settings) as sender:
        for key, value, partition in plan.send:
            sender.send(topics.sales, value, key=key, partition=partition)
        sender.close()
    return summary


def check_namespace(settings: Settings) -> None:
    """A namespace without a single topic is a typo, not a healthy pipeline: say so."""
    from salesflow.kafka import admin, check_reachable

    check_reachable(settings)
    topics = Topics(settings.namespace)
    try:
        names = admin(settings).list_topics(timeout=10).topics
    except Exception as exc:  # confluent_kafka.KafkaException
        raise KafkaUnavailable(f"no Kafka broker answered at {settings.kafka_bootstrap}") \
            from exc
    if not any(topics.owns(n) for n in names):
        others = sorted(n[:-len(".sales")] for n in names if n.endswith(".sales"))
        raise ConfigError(
            f"namespace {settings.namespace!r} has no topics on {settings.kafka_bootstrap} "
            "(check SALESFLOW_NAMESPACE" +
            (f"; namespaces there: {', '.join(others)})" if others else ")"))


def show(settings: Settings, reason: str | None = None, limit: int = 50,
         json_output: bool = False) -> None:
    """Print the dead letters (newest `limit`, 0 = all) as a table, or as JSON."""
    import typer

    wanted = parse_reason(reason)
    check_namespace(settings)
    letters = select(read_letters(settings), wanted)
    shown = letters[-limit:] if limit else letters
    codec = codec_for(settings)
    if json_output:
        typer.echo(json.dumps([as_dict(x, codec) for x in shown], ensure_ascii=False,
                              indent=1, default=str))
        return
    render(letters, shown, Topics(settings.namespace).dlq, codec)


def render(letters: Sequence[Letter], shown: Sequence[Letter], topic: str,
           codec: Codec | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not letters:
        console.print(f"no dead letters on {topic}")
        return
    table = Table(title=f"{topic}: {len(shown)} of {len(letters)} (newest last)",
                  show_lines=False, expand=False)
    table.add_column("reason", style="bold red", no_wrap=True)
    table.add_column("sale_id", overflow="fold")
    table.add_column("from", style="cyan", overflow="fold")
    table.add_column("rejected at (UTC)", style="dim", no_wrap=True)
    table.add_column("message", overflow="fold")
    table.add_column("record", overflow="fold", style="dim")
    for letter in shown:
        dead = letter.dead
        table.add_row(dead.reason.value, dead.sale_id or "-", origin(dead),
                      when(dead.rejected_at), dead.message or "-", summary(dead, codec))
    console.print(table)
    console.print("by reason: " + ", ".join(
        f"{reason} {n}" for reason, n in sorted(reason_counts(letters).items())))
