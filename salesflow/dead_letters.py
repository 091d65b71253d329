"""Dead-letter records: reason codes and the headers every rejected record carries.

The value of a dead letter is the original bytes (for producer-side rejections, the original
CSV row as UTF-8); the headers say why and where from, so `salesflow dlq show` can list them
and `salesflow dlq replay` can send them back through validation.

Two sides reject records: producers (a CSV row that is not a sale: `missing_field`,
`unparseable`, `out_of_bounds`; the headers name the file and line) and the stream app (a
record of `<ns>.sales` or of a dimension topic; the headers name topic, partition, offset).
`DeadLetterCounts` counts them by side and reason (`read_counts` reads the topic). A file sent
again dead-letters its bad rows again; producer-side letters carry a `row_id` (the row's
content and its occurrence number among identical rejected rows of the file), and each
`row_id` is counted once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from salesflow.settings import Settings


class Reason(StrEnum):
    """The data contract's reason codes, in the order the rules are checked."""

    UNDECODABLE = "undecodable"
    MISSING_FIELD = "missing_field"
    UNPARSEABLE = "unparseable"
    OUT_OF_BOUNDS = "out_of_bounds"
    NON_POSITIVE_QUANTITY = "non_positive_quantity"
    NON_POSITIVE_PRICE = "non_positive_price"
    TOTAL_MISMATCH = "total_mismatch"
    DATE_OUT_OF_RANGE = "date_out_of_range"
    UNKNOWN_CUSTOMER = "unknown_customer"
    UNKNOWN_STORE = "unknown_store"
    UNKNOWN_SALES_PERSON = "unknown_sales_person"
    UNKNOWN_PRODUCT = "unknown_product"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one record was rejected: a value, not an exception."""

    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected record as it travels on `<ns>.sales.dlq`."""

    value: bytes
    key: bytes | None
    reason: Reason
    message: str
    source: str  # the topic, or the file for producer-side rejections
    partition: int | None = None
    offset: int | None = None
    line: int | None = None
    fingerprint: bytes | None = None
    rejected_at: str = ""
    sale_id: str | None = None
    row_id: str | None = None  # producer-side: the same row of a file sent again has the same

    @property
    def side(self) -> Side:
        """`producer` for a CSV row (it has a file line), else `stream`."""
        return "producer" if self.line is not None else "stream"

    def headers(self) -> list[tuple[str, bytes]]:
        when = self.rejected_at or datetime.now(UTC).isoformat(timespec="milliseconds")
        out = [
            ("reason", self.reason.value.encode()),
            ("message", self.message.encode("utf-8", "replace")),
            ("source", self.source.encode("utf-8", "replace")),
            ("rejected_at", when.encode()),
        ]
        for name, value in (("partition", self.partition), ("offset", self.offset),
                            ("line", self.line)):
            if value is not None:
                out.append((name, str(value).encode()))
        if self.fingerprint:
            out.append(("fingerprint", self.fingerprint.hex().encode()))
        if self.sale_id:
            out.append(("sale_id", self.sale_id.encode("utf-8", "replace")))
        if self.row_id:
            out.append(("row_id", self.row_id.encode()))
        return out

    @classmethod
    def from_message(cls, value: bytes | None, key: bytes | None,
                     headers: list[tuple[str, bytes]] | None) -> DeadLetter:
        h = {k: v.decode("utf-8", "replace") for k, v in (headers or [])}

        def num(name: str) -> int | None:
            return int(h[name]) if h.get(name, "").lstrip("-").isdigit() else None

        return cls(
            value=value or b"",
            key=key,
            reason=Reason(h.get("reason", Reason.UNDECODABLE.value)),
            message=h.get("message", ""),
            source=h.get("source", ""),
            partition=num("partition"),
            offset=num("offset"),
            line=num("line"),
            fingerprint=bytes.fromhex(h["fingerprint"]) if h.get("fingerprint") else None,
            rejected_at=h.get("rejected_at", ""),
            sale_id=h.get("sale_id"),
            row_id=h.get("row_id"),
        )


Side = Literal["producer", "stream"]


def row_id(content_key: bytes, occurrence: int) -> str:
    """The id of a rejected CSV row: its content and its occurrence number (1, 2, …) among
    identical rejected rows of its file."""
    return f"row-{content_key.hex()}" if occurrence == 1 else \
        f"row-{content_key.hex()}-{occurrence}"


@dataclass
class DeadLetterCounts:
    """Dead letters by side and reason; producer-side ones once per `row_id`."""

    producer: Counter[str] = field(default_factory=Counter)
    stream: Counter[str] = field(default_factory=Counter)
    letters: int = 0  # messages on the topic, repeats included

    @property
    def producer_total(self) -> int:
        return sum(self.producer.values())

    @property
    def stream_total(self) -> int:
        return sum(self.stream.values())

    def by_side(self) -> dict[str, dict[str, int]]:
        """`{"producer": {reason: n}, "stream": {reason: n}}`, reasons sorted."""
        return {"producer": dict(sorted(self.producer.items())),
                "stream": dict(sorted(self.stream.items()))}


def count(letters: Iterable[DeadLetter]) -> DeadLetterCounts:
    """Count dead letters by side and reason (pure)."""
    out = DeadLetterCounts()
    seen: set[str] = set()
    for dead in letters:
        out.letters += 1
        if dead.side == "producer":
            if dead.row_id is not None:
                if dead.row_id in seen:
                    continue
                seen.add(dead.row_id)
            out.producer[dead.reason.value] += 1
        else:
            out.stream[dead.reason.value] += 1
    return out


def read_counts(settings: Settings, timeout: float = 30.0) -> DeadLetterCounts:
    """`count` over every committed dead letter on `<ns>.sales.dlq` (zeros when the topic
    does not exist yet). Reads the whole topic: for `salesflow status`, not a hot path."""
    from confluent_kafka import KafkaException

    from salesflow.errors import KafkaUnavailable
    from salesflow.kafka import admin, read_all
    from salesflow.topics import Topics

    topic = Topics(settings.namespace).dlq
    try:
        if topic not in admin(settings).list_topics(timeout=timeout).topics:
            return DeadLetterCounts()
    except KafkaException as exc:
        raise KafkaUnavailable(f"no Kafka broker answered at {settings.kafka_bootstrap}") \
            from exc
    return count(_letters(read_all(settings, topic, timeout)))


def _letters(messages: Iterable) -> Iterable[DeadLetter]:
    for msg in messages:
        headers = msg.headers() or []
        try:
            yield DeadLetter.from_message(msg.value(), msg.key(), headers)
        except ValueError:  # a reason code this release does not know: counted as undecodable
            yield DeadLetter.from_message(msg.value(), msg.key(),
                                          [(k, v) for k, v in headers if k != "reason"])
