"""`salesflow produce dims DIR`: the four dimension files to their compacted topics.

Each record is keyed by its id, so compaction keeps the latest version of every record and a
new worker can rebuild its dimension tables from the topic alone. Files are read as strictly
as sales files (`salesflow.parsing`); every file is checked (UTF-8, its columns) before
anything is sent. A row that cannot be a record (`missing_field`, `unparseable`, or
`out_of_bounds`: the bounds every reader of the topic applies, `salesflow.dimensions`) is
dead-lettered with its file and line, and the other rows are sent.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producers.rows import COLUMNS, dimension_row
from producers.sales import Wait, connect
from salesflow.codec import codec_for
from salesflow.dead_letters import DeadLetter, Reason, Rejection, row_id
from salesflow.delivery import Sender
from salesflow.errors import ConfigError, InputError, ProduceFailed, SalesflowError
from salesflow.parsing import allow_long_fields, read_csv_bytes
from salesflow.settings import Settings
from salesflow.topics import DIMENSIONS, Topics


@dataclass
class DimensionFile:
    """One dimension file read: its records and its rejected rows."""

    name: str
    path: Path
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    rejected: list[DeadLetter] = field(default_factory=list)


@dataclass
class DimsSummary:
    sent: dict[str, int] = field(default_factory=dict)
    by_reason: Counter[str] = field(default_factory=Counter)

    @property
    def dead_lettered(self) -> int:
        return sum(self.by_reason.values())

    def line(self) -> str:
        text = " / ".join(f"{name} {n}" for name, n in self.sent.items())
        if self.by_reason:
            text += f" / dead-lettered {self.dead_lettered} (" + ", ".join(
                f"{r} {n}" for r, n in sorted(self.by_reason.items())) + ")"
        return text


def load_dimension(path: Path, name: str) -> DimensionFile:
    """Read one dimension file; `InputError` when the file itself cannot be read."""
    content = read_csv_bytes(path)
    allow_long_fields()
    out = DimensionFile(name, path)
    reader = csv.reader(io.StringIO(content.decode("utf-8"), newline=""))
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in COLUMNS[name] if c not in header]
    if missing:
        raise InputError(f"{path}: not a {name} file, missing columns {', '.join(missing)}")
    seen: Counter[bytes] = Counter()
    line = 1 + reader.line_num
    try:
        for row in reader:
            row_line, line = line, 1 + reader.line_num
            if not row:
                continue
            read = (dimension_row(name, dict(zip(header, row, strict=False)))
                    if len(row) == len(header) else Rejection(
                        Reason.UNPARSEABLE, f"{len(row)} fields, header has {len(header)}"))
            if isinstance(read, Rejection):
                out.rejected.append(_dead_letter(path, row_line, row, read, seen))
            else:
                out.records.append((read.id, read.record))
    except csv.Error as exc:
        raise InputError(f"{path}: line {line}: {exc}") from None
    return out


def _dead_letter(path: Path, line: int, row: list[str], why: Rejection,
                 seen: Counter[bytes]) -> DeadLetter:
    text = io.StringIO()
    csv.writer(text, lineterminator="").writerow(row)
    value = text.getvalue().encode("utf-8")
    key = hashlib.blake2b(value, digest_size=16).digest()
    seen[key] += 1
    return DeadLetter(value=value, key=None, reason=why.reason,
                      message=why.message, source=str(path), line=line,
                      row_id=row_id(key, seen[key]))


def read_dimension(path: Path, name: str) -> list[tuple[int, dict]]:
    """The records of one dimension file as (id, record); rows that are not records are left
    out (`load_dimension` has them)."""
    return load_dimension(path, name).records


def produce_dims(settings: Settings, directory: Path,
                 on_wait: Wait | None = None) -> DimsSummary:
    """Send every dimension file found in `directory`; bad rows to the dead-letter topic."""
    found = {name: directory / f"{name}.csv" for name in DIMENSIONS
             if (directory / f"{name}.csv").is_file()}
    if not found:
        raise ConfigError(f"{directory}: none of {', '.join(f'{d}.csv' for d in DIMENSIONS)}")
    files = [load_dimension(path, name) for name, path in found.items()]
    topics, codec = Topics(settings.namespace), codec_for(settings)
    connect(settings, [topics.sales, topics.dlq, *topics.dims.values()], on_wait)
    summary = DimsSummary()
    sender = Sender(settings, delivery_timeout_s=settings.producer_outage_seconds,
                    on_wait=on_wait)
    try:
        for dim in files:
            for key, record in dim.records:
                sender.send(topics.dim(dim.name), codec.encode(dim.name, record),
                            key=str(key).encode())
            for dead in dim.rejected:
                sender.send(topics.dlq, dead.value, key=dead.key, headers=dead.headers())
                summary.by_reason[dead.reason.value] += 1
            summary.sent[dim.name] = len(dim.records)
        sender.close()
    except SalesflowError as exc:
        sender.abandon()
        raise ProduceFailed(f"{exc}; {sender.delivered} of "
                            f"{sum(len(d.records) + len(d.rejected) for d in files)} "
                            "record(s) acknowledged. Sending the files again is safe") from exc
    return summary
