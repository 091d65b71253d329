"""The Avro codec: the only module that calls fastavro.

Every message says which schema wrote it, so readers resolve old and new versions:
- by default Avro single-object encoding: `C3 01` + the writer schema's 8-byte CRC-64-AVRO
  fingerprint (little-endian) + the binary body;
- with a schema registry (`SALESFLOW_SCHEMA_REGISTRY_URL`), the Confluent wire format:
  `00` + a 4-byte big-endian schema id + the body (see `registry.py`).

A reader knows a set of writer schemas (every `.avsc` under `schemas/`, plus any registered
later) and decodes into its own, current version of that record (Avro schema resolution).
A codec with a registry decodes both framings (so topics can migrate from one to the other):
a Confluent message's writer schema is looked up by id in the registry, once per id.
Bytes that fit none of this raise `DecodeError`: the stream app's `undecodable`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import fastavro
from fastavro.schema import expand_schema, to_parsing_canonical_form
from fastavro.schema import fingerprint as _fingerprint

from salesflow import sale_wire
from salesflow.errors import DecodeError, SalesflowError
from salesflow.sale import EPOCH, Sale, day

if TYPE_CHECKING:
    from salesflow.registry import Registry
    from salesflow.settings import Settings

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
    "valid_sales": "valid_sales.avsc",
}
SALE_RECORDS = frozenset({"sale", "sale_batch"})  # what a message of `<ns>.sales` may hold

# (customer_id, store_id, sales_person_id, sales_date as days since 1970, total_cost in cents)
SaleFacts = tuple[int, int, int, int, int]

# (writer schema, reader short name, reader schema or None when the writer is the reader)
_Writer = tuple[dict[str, Any], str, dict[str, Any] | None]


def sale_facts(sales: Iterable[Sale]) -> list[SaleFacts]:
    """What the marts need of each sale, as plain tuples: (customer_id, store_id,
    sales_person_id, sales_date in days since 1970, total_cost in cents); the rebuild's hot
    path."""
    return [(s.customer_id, s.store_id, s.sales_person_id, s.sales_date.toordinal() - EPOCH,
             s.total_cents) for s in sales]


def fingerprint(parsed_schema: dict[str, Any]) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form, in single-object byte order.

    Named types are expanded first, so a SaleBatch carrying a newer Sale has a new
    fingerprint (the canonical form alone would only name the Sale it holds)."""
    canonical = to_parsing_canonical_form(expand_schema(parsed_schema))
    return bytes.fromhex(_fingerprint(canonical, "CRC-64-AVRO"))


def load_schemas(directory: Path = SCHEMAS_DIR) -> dict[str, dict[str, Any]]:
    """Parse the project's `.avsc` files; named types (Sale inside SaleBatch) resolve."""
    named: dict[str, Any] = {}
    parsed = {}
    for short, filename in SCHEMA_FILES.items():  # order matters: sale before sale_batch
        raw = json.loads((directory / filename).read_text(encoding="utf-8"))
        parsed[short] = fastavro.parse_schema(raw, named_schemas=named)
    return parsed


def schema_json(parsed_schema: dict[str, Any]) -> str:
    """A parsed schema as standalone Avro JSON: named types it uses are defined inline.

    This is what goes to a schema registry: SaleBatch's text includes the Sale it carries, so
    a SaleBatch of a new Sale version gets a new registry id.
    """
    named = parsed_schema.get("__named_schemas", {})
    defined: set[str] = set()

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            if node in named and node not in defined:
                return walk(named[node])
            return node
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            out = {k: v for k, v in node.items() if not k.startswith("__")}
            if out.get("type") in ("record", "error", "enum", "fixed") and "name" in out:
                defined.add(out["name"])
            for key in ("type", "items", "values", "fields"):
                if key in out:
                    out[key] = walk(out[key])
            return out
        return node

    return json.dumps(walk(parsed_schema), separators=(",", ":"))


def subject_for(parsed_schema: dict[str, Any]) -> str:
    """The registry subject of a record: its full name (`com.salesflow.Sale`).

    Record-name strategy rather than Confluent's default topic strategy (`<topic>-value`):
    the same record goes to several topics (a SaleBatch to `<ns>.sales`, and its sales to
    `<ns>.valid_sales` and the dead-letter topic; the namespace is configurable), and each
    record should have one version history and one compatibility check, not one per topic.
    """
    return parsed_schema["name"]


class DecodedSales(NamedTuple):
    """A message of the sales topic: its record name (`sale` or `sale_batch`), its sales."""

    name: str
    sales: list[Sale]
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded message: which record it is (short name), the record, the writer fingerprint.

    `fingerprint` is the single-object fingerprint (8 bytes), or for a Confluent message
    `00` + the 4-byte schema id (5 bytes).
    """

    name: str
    record: dict[str, Any]
    fingerprint: bytes


class Codec:
    """Encodes with the current schemas and decodes anything written by a known schema.

    Without a registry it writes single-object encoding; with one (`registry.Registry`), the
    Confluent wire format, registering each current schema once. It reads both either way.
    """

    def __init__(self, schemas: dict[str, dict[str, Any]] | None = None,
                 registry: Registry | None = None) -> None:
        self.schemas = schemas if schemas is not None else load_schemas()
        self.registry = registry
        self._by_fullname = {s["name"]: short for short, s in self.schemas.items()}
        self._headers = {short: SINGLE_OBJECT_MAGIC + fingerprint(s)
                         for short, s in self.schemas.items()}
        # fingerprint -> (writer schema, reader short name, reader schema or None if identical)
        self._writers: dict[bytes, _Writer] = {}
        for short, schema in self.schemas.items():
            self._writers[fingerprint(schema)] = (schema, short, None)
        self._registered: dict[str, bytes] = {}  # short name -> 00 + schema id, once registered
        self._by_id: dict[bytes, _Writer] = {}  # 4-byte schema id -> writer, as above
        self._bad_ids: dict[bytes, str] = {}  # ids whose schema we can never read, and why
        # writer fingerprint (or 00 + id) -> the sale schemas without logical types (below)
        self._raw: dict[bytes, tuple[Any, Any]] = {}

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
        """What precedes the body of a `name` record: single-object or Confluent framing."""
        if self.registry is None:
            return self._headers[name]
        header = self._registered.get(name)
        if header is None:
            header = self._register(name)
        return header

    def _register(self, name: str) -> bytes:
        # Registry errors propagate (salesflow errors from `registry.py`): an encoder that
        # cannot register must not send.
        schema = self.schemas[name]
        assert self.registry is not None
        schema_id = self.registry.register(subject_for(schema), schema_json(schema))
        header = CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")
        self._registered[name] = header
        self._by_id.setdefault(header[1:], (schema, name, None))  # our own: no resolution
        return header

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        """Encode `record` with the current schema `name` (framing as in `header`)."""
        out = io.BytesIO()
        out.write(self.header(name))
        fastavro.schemaless_writer(out, self.schemas[name], record)
        return out.getvalue()

    def encode_valid_sales(self, entries: list[sale_wire.AcceptedFrom]) -> bytes:
        """A `ValidSales` record of (message, accepted indices, list prices) entries (the
        stream app's hot path: written by hand)."""
        return self.header("valid_sales") + sale_wire.write_valid_sales(entries)

    def encode_sale(self, sale: Sale) -> bytes:
        """One sale as a single-sale message (dead letters, parked and rerouted sales)."""
        return self.encode("sale", sale.to_record())

    def encode_many(self, name: str, records: Iterable[dict[str, Any]]) -> list[bytes]:
        header, schema, write = self.header(name), self.schemas[name], fastavro.schemaless_writer
        out = []
        for record in records:
            buf = io.BytesIO()
            buf.write(header)
            write(buf, schema, record)
            out.append(buf.getvalue())
        return out

    def decode(self, data: bytes | None) -> Decoded:
        """Decode one message; raise `DecodeError` for anything that is not a known schema."""
        known, fp, start = self._writer_of(data)
        assert data is not None
        return _read(data, start, known, fp)

    def decode_sales(self, data: bytes | None) -> DecodedSales:
        """A message of the sales topic as `Sale`s: the stream app's hot path.

        The current `Sale` and `SaleBatch` are read by hand (`sale_wire`); any other writer
        schema with fastavro and the schemas stripped of their logical types (dates stay day
        numbers, decimals unscaled bytes), half the time of building `date` and `Decimal`
        objects that would only be turned into integers again. Anything that is not a `Sale`
        or `SaleBatch` of a known schema raises `DecodeError`.
        """
        known, fp, start = self._sale_writer_of(data)
        assert data is not None
        if known[2] is None:  # written with the current schema: read by hand
            try:
                sales = sale_wire.read_sales(data, start, known[1] == "sale_batch")
            except sale_wire.Corrupt as exc:
                raise DecodeError(f"corrupt {known[1]} message: {exc}", fp) from exc
            return DecodedSales(known[1], sales, fp)
        return DecodedSales(known[1], [_raw_sale(r) for r in self._raw_records(
            data, known, fp, start)], fp)

    def decode_sale_facts(self, data: bytes | None) -> list[SaleFacts]:
        """`sale_facts` of a sales-topic message, with `decode_sales`'s errors."""
        return sale_facts(self.decode_sales(data).sales)

    def _sale_writer_of(self, data: bytes | None) -> tuple[_Writer, bytes, int]:
        known, fp, start = self._writer_of(data)
        if known[1] not in SALE_RECORDS:
            raise DecodeError(f"a {known[1]} record is not a sale", fp)
        return known, fp, start

    def _raw_records(self, data: bytes, known: _Writer, fp: bytes, start: int) -> Any:
        """The sale records of another writer schema, read without logical types."""
        raw = self._raw.get(fp)
        if raw is None:
            raw = self._raw[fp] = _raw_variant(known)
        buf = io.BytesIO(data)
        buf.seek(start)
        try:
            record = fastavro.schemaless_reader(buf, raw[0], raw[1])
        except Exception as exc:  # fastavro raises many types for corrupt input
            raise DecodeError(f"corrupt {known[1]} message: {type(exc).__name__}", fp) from exc
        if buf.tell() != len(data):
            raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after a {known[1]} "
                              "record", fp)
        return record["sales"] if known[1] == "sale_batch" else (record,)

    def _writer_of(self, data: bytes | None) -> tuple[_Writer, bytes, int]:
        """(writer, its fingerprint or 00 + schema id, where the body starts)."""
        if data and data[:1] == CONFLUENT_MAGIC:
            if len(data) < 5:
                raise DecodeError("truncated Confluent wire format header")
            sid = data[1:5]
            known = self._by_id.get(sid)
            if known is None:
                known = self._writer_by_id(sid)
            return known, CONFLUENT_MAGIC + sid, 5
        if not data or len(data) < 10 or data[:2] != SINGLE_OBJECT_MAGIC:
            raise DecodeError("not an Avro single-object message")
        fp = data[2:10]
        known = self._writers.get(fp)
        if known is None:
            raise DecodeError(f"unknown schema fingerprint {fp.hex()}")
        return known, fp, 10

    def _writer_by_id(self, sid: bytes) -> _Writer:
        schema_id = int.from_bytes(sid, "big")
        if sid in self._bad_ids:
            raise DecodeError(self._bad_ids[sid])
        if self.registry is None:
            raise DecodeError(f"Confluent wire format message (schema id {schema_id}) but no "
                              "schema registry is configured (SALESFLOW_SCHEMA_REGISTRY_URL)")
        # Any registry failure is a DecodeError, so a registry outage cannot crash the stream
        # worker. Caveat: while the registry is down, a message whose schema id is not cached
        # yet (the first messages after a producer's schema change, or any message right after
        # a worker restart) is dead-lettered as `undecodable` although it is fine: replay those
        # dead letters (`salesflow dlq replay --reason undecodable`) once the registry is back.
        try:
            schema_str = self.registry.schema(schema_id)
        except SalesflowError as exc:  # the registry adapter's errors name the id already
            raise DecodeError(str(exc)) from exc
        except Exception as exc:
            raise DecodeError(f"schema registry lookup of schema id {schema_id} failed: "
                              f"{type(exc).__name__}: {exc}") from exc
        # From here on the registry did answer: a schema we cannot use stays unusable.
        try:
            raw = json.loads(schema_str)
            parsed = fastavro.parse_schema(raw, named_schemas=_named(self.schemas))
        except Exception as exc:
            self._bad_ids[sid] = (f"schema id {schema_id} is not an Avro schema we can parse: "
                                  f"{type(exc).__name__}")
            raise DecodeError(self._bad_ids[sid]) from exc
        fullname = parsed.get("name") if isinstance(parsed, dict) else None
        short = self._by_fullname.get(fullname) if isinstance(fullname, str) else None
        if short is None:
            self._bad_ids[sid] = (f"schema id {schema_id} is {fullname or 'not a record'!r}, "
                                  "which has no reader schema here")
            raise DecodeError(self._bad_ids[sid])
        reader = self.schemas[short]
        if _same_schema(parsed, reader):
            known: _Writer = (reader, short, None)
        else:
            known = (parsed, short, reader)
        self._by_id[sid] = known
        return known


def _read(data: bytes, offset: int, known: _Writer, fp: bytes) -> Decoded:
    writer, short, reader = known
    buf = io.BytesIO(data)
    buf.seek(offset)
    try:
        record = fastavro.schemaless_reader(buf, writer, reader)
    except Exception as exc:  # fastavro raises many types for corrupt input
        raise DecodeError(f"corrupt {short} message: {type(exc).__name__}", fp) from exc
    if buf.tell() != len(data):
        raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after a {short} record",
                          fp)
    return Decoded(short, record, fp)  # type: ignore[arg-type]


_new_tuple = tuple.__new__
_from_bytes = int.from_bytes


def _raw_sale(r: dict[str, Any]) -> Sale:
    """A `Sale` from a record read without logical types (see `_raw_variant`).

    Built with `tuple.__new__`: a NamedTuple's own constructor is a Python call, and this
    runs once per sale."""
    return _new_tuple(Sale, (  # type: ignore[call-overload]
        r["sale_id"], r["customer_id"], r["store_id"], r["product_name"],
        day(r["sales_date"]), r["sales_person_id"],
        _from_bytes(r["price"], "big", signed=True), r["quantity"],
        _from_bytes(r["total_cost"], "big", signed=True)))


def _raw_variant(known: _Writer) -> tuple[Any, Any]:
    """The writer (and reader) schema of a sale record without logical types.

    Logical types are annotations on an unchanged encoding, so the bytes read the same. Only
    money at scale 2 can be read as integer cents: another scale is refused, not guessed at.
    """
    writer, short, reader = known

    def strip(node: Any) -> Any:
        if isinstance(node, list):
            return [strip(item) for item in node]
        if not isinstance(node, dict):
            return node
        if node.get("logicalType") == "decimal" and node.get("scale", 0) != 2:
            raise DecodeError(f"{short} schema has money at scale {node.get('scale', 0)}, "
                              "not 2")
        return {k: strip(v) for k, v in node.items()
                if k not in ("logicalType", "precision", "scale")}

    def parse(schema: dict[str, Any]) -> Any:
        return fastavro.parse_schema(strip(json.loads(schema_json(schema))), named_schemas={})

    return parse(writer), None if reader is None else parse(reader)


def _same_schema(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same standalone schema (docs and logical types included): read without resolution."""
    return json.loads(schema_json(a)) == json.loads(schema_json(b))


def _named(schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {s["name"]: s for s in schemas.values()}


def codec_for(settings: Settings) -> Codec:
    """The codec a process should use: Confluent wire format when a registry is configured."""
    if not settings.schema_registry_url:
        return Codec()
    from salesflow.registry import ConfluentRegistry  # needs confluent-kafka[schemaregistry]

    return Codec(registry=ConfluentRegistry.from_settings(settings))
