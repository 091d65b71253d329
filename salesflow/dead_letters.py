"""Dead-letter records: reason codes and the headers every rejected record carries.

The value of a dead letter is the original bytes (for producer-side rejections, the original
CSV row as UTF-8); the headers say why and where from, so `salesflow dlq show` can list them
and `salesflow dlq replay` can send them back through validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


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
        )
