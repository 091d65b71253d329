"""`salesflow produce dims DIR`: the four dimension files to their compacted topics.

Each record is keyed by its id, so compaction keeps the latest version of every record and a
new worker can rebuild its dimension tables from the topic alone.
"""

from __future__ import annotations

import csv
from pathlib import Path

from producers.rows import parse_dimension
from salesflow.codec import codec_for
from salesflow.delivery import Sender
from salesflow.errors import ConfigError
from salesflow.kafka import check_reachable, ensure_topics
from salesflow.settings import Settings
from salesflow.topics import DIMENSIONS, Topics


def read_dimension(path: Path, name: str) -> list[tuple[int, dict]]:
    """Every row of one dimension file as (id, record); a bad row is a clear error."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        out = []
        for row in reader:
            try:
                out.append(parse_dimension(name, row))
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path}:{reader.line_num}: {name} row unreadable: {exc}") \
                    from exc
    return out


def produce_dims(settings: Settings, directory: Path) -> dict[str, int]:
    """Send every dimension file found in `directory`; returns records sent per dimension."""
    found = {name: directory / f"{name}.csv" for name in DIMENSIONS
             if (directory / f"{name}.csv").is_file()}
    if not found:
        raise ConfigError(f"{directory}: none of {', '.join(f'{d}.csv' for d in DIMENSIONS)}")
    records = {name: read_dimension(path, name) for name, path in found.items()}
    check_reachable(settings)
    topics, codec = Topics(settings.namespace), codec_for(settings)
    ensure_topics(settings, topics.dims.values())  # only what it writes (ACLs)
    with Sender(settings) as sender:
        for name, rows in records.items():
            for key, record in rows:
                sender.send(topics.dim(name), codec.encode(name, record), key=str(key).encode())
        sender.close()
    return {name: len(rows) for name, rows in records.items()}
