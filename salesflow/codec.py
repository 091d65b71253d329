"""The Avro codec: the only module that calls fastavro.

Every message says which schema wrote it, so readers resolve old and new versions:
- by default Avro single-object encoding: `C3 01` + the writer schema's 8-byte CRC-64-AVRO
  fingerprint (little-endian) + the binary body;
- with a schema registry (`SALESFLOW_SCHEMA_REGISTRY_URL`), the Confluent wire format:
  `00` + a 4-byte big-endian schema id + the body (see `registry.py`).

A reader knows a set of writer schemas (every `.avsc` under `schemas/`, plus any registered
later) and decodes into its own, current version of that record (Avro schema resolution).
Bytes that fit none of this raise `DecodeError`: the stream app's `undecodable`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _fingerprint
from fastavro.schema import to_parsing_canonical_form

from salesflow.errors import DecodeError

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"

# Schema file names, by the short names used across the project.
SCHEMA_FILES = {
    "sale": "sale.avsc",
    "sale_batch": "sale_batch.avsc",
    "customer": "customer.avsc",
    "store": "store.avsc",
    "product": "product.avsc",
    "sales_team": "sales_team.avsc",
}


def fingerprint(parsed_schema: dict[str, Any]) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form, in single-object byte order."""
    return bytes.fromhex(_fingerprint(to_parsing_canonical_form(parsed_schema), "CRC-64-AVRO"))


def load_schemas(directory: Path = SCHEMAS_DIR) -> dict[str, dict[str, Any]]:
    """Parse the project's `.avsc` files; named types (Sale inside SaleBatch) resolve."""
    named: dict[str, Any] = {}
    parsed = {}
    for short, filename in SCHEMA_FILES.items():  # order matters: sale before sale_batch
        raw = json.loads((directory / filename).read_text(encoding="utf-8"))
        parsed[short] = fastavro.parse_schema(raw, named_schemas=named)
    return parsed


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded message: which record it is (short name), the record, the writer fingerprint."""

    name: str
    record: dict[str, Any]
    fingerprint: bytes


class Codec:
    """Encodes with the current schemas and decodes anything written by a known schema."""

    def __init__(self, schemas: dict[str, dict[str, Any]] | None = None) -> None:
        self.schemas = schemas if schemas is not None else load_schemas()
        self._by_fullname = {s["name"]: short for short, s in self.schemas.items()}
        self._headers = {short: SINGLE_OBJECT_MAGIC + fingerprint(s)
                         for short, s in self.schemas.items()}
        # fingerprint -> (writer schema, reader short name, reader schema or None if identical)
        self._writers: dict[bytes, tuple[dict[str, Any], str, dict[str, Any] | None]] = {}
        for short, schema in self.schemas.items():
            self._writers[fingerprint(schema)] = (schema, short, None)

    def register_writer(self, writer_schema: dict[str, Any] | str) -> bytes:
        """Make bytes written by another version of one of our records readable."""
        if isinstance(writer_schema, str):
            writer_schema = json.loads(writer_schema)
        parsed = fastavro.parse_schema(writer_schema, named_schemas=_named(self.schemas))
        short = self._by_fullname.get(parsed["name"])
        if short is None:
            raise DecodeError(f"no reader schema for record {parsed['name']!r}")
        fp = fingerprint(parsed)
        self._writers.setdefault(fp, (parsed, short, self.schemas[short]))
        return fp

    def header(self, name: str) -> bytes:
        return self._headers[name]

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        """Single-object encoding of `record` with the current schema `name`."""
        out = io.BytesIO()
        out.write(self._headers[name])
        fastavro.schemaless_writer(out, self.schemas[name], record)
        return out.getvalue()

    def encode_many(self, name: str, records: Iterable[dict[str, Any]]) -> list[bytes]:
        header, schema, write = self._headers[name], self.schemas[name], fastavro.schemaless_writer
        out = []
        for record in records:
            buf = io.BytesIO()
            buf.write(header)
            write(buf, schema, record)
            out.append(buf.getvalue())
        return out

    def decode(self, data: bytes | None) -> Decoded:
        """Decode one message; raise `DecodeError` for anything that is not a known schema."""
        if not data or len(data) < 10 or data[:2] != SINGLE_OBJECT_MAGIC:
            raise DecodeError("not an Avro single-object message")
        fp = data[2:10]
        known = self._writers.get(fp)
        if known is None:
            raise DecodeError(f"unknown schema fingerprint {fp.hex()}")
        writer, short, reader = known
        buf = io.BytesIO(data)
        buf.seek(10)
        try:
            record = fastavro.schemaless_reader(buf, writer, reader)
        except Exception as exc:  # fastavro raises many types for corrupt input
            raise DecodeError(f"corrupt {short} message: {type(exc).__name__}") from exc
        if buf.tell() != len(data):
            raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after a {short} record")
        return Decoded(short, record, fp)  # type: ignore[arg-type]


def _named(schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {s["name"]: s for s in schemas.values()}
