"""One sales partition's tables on disk: RocksDB, a column family per table, and a checkpoint.

The store of partition p holds exactly what the changelogs of p hold up to its checkpoint
(the changelog offset of each table it reflects). The worker writes a commit's changes and
the new checkpoint in one atomic `WriteBatch`, and only after the Kafka transaction that
carried the same changes to the changelogs has committed; so a store is never ahead of its
changelogs, and a restart replays only the changelog records after the checkpoint
(`restore.py`). Keys and values are the changelog's own bytes (`salesflow.tables`), so
restoring is a copy.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import rocksdict

from salesflow.tables import APPEND_ONLY, SEEN, TABLES, unpack_seen

CHECKPOINT = b"checkpoint"
WRITTEN_AT = b"written_at"
_META = "meta"

# Memory: one cache and one write-buffer budget for every store of the process, so a worker
# holding six partitions does not take six times the memory of one.
_CACHE = rocksdict.Cache(32 << 20)
_WRITE_BUFFERS = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
    64 << 20, False, _CACHE)


def _options() -> rocksdict.Options:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_write_buffer_size(8 << 20)
    opts.set_max_write_buffer_number(2)
    opts.set_target_file_size_base(16 << 20)
    opts.set_keep_log_file_num(2)
    table = rocksdict.BlockBasedOptions()
    table.set_block_cache(_CACHE)
    table.set_bloom_filter(10, False)
    opts.set_block_based_table_factory(table)
    opts.set_write_buffer_manager(_WRITE_BUFFERS)
    return opts


Changes = Mapping[str, Mapping[bytes, bytes | None]]  # table -> key -> value (None: delete)


class PartitionStore:
    """The tables of one sales partition in one RocksDB database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        opts = _options()
        self._db = rocksdict.Rdict(str(path), opts, column_families={
            name: _options() for name in (*TABLES, _META)})
        self._cf = {name: self._db.get_column_family(name) for name in (*TABLES, _META)}
        self._handles = {name: self._db.get_column_family_handle(name)
                         for name in (*TABLES, _META)}

    # --- reads ------------------------------------------------------------------------------

    def get(self, table: str, key: bytes) -> bytes | None:
        return self._cf[table].get(key)

    def get_many(self, table: str, keys: list[bytes]) -> list[bytes | None]:
        return self._cf[table].get(keys)

    def items(self, table: str) -> Iterator[tuple[bytes, bytes]]:
        yield from self._cf[table].items()

    def checkpoint(self) -> dict[str, int]:
        """table -> the changelog offset of the last record this store reflects."""
        raw = self._cf[_META].get(CHECKPOINT)
        return json.loads(raw) if raw else {}

    def written_at(self) -> float:
        """Wall-clock time of the last write (0 if never written)."""
        raw = self._cf[_META].get(WRITTEN_AT)
        return float(raw) if raw else 0.0

    def _mark(self, batch: rocksdict.WriteBatch, checkpoint: Mapping[str, int]) -> None:
        merged = self.checkpoint() | dict(checkpoint)
        meta = self._handles[_META]
        batch.put(CHECKPOINT, json.dumps(merged).encode(), meta)
        batch.put(WRITTEN_AT, repr(time.time()).encode(), meta)

    # --- writes -----------------------------------------------------------------------------

    def write(self, changes: Changes, seen: Iterable[tuple[bytes, bytes]],
              checkpoint: Mapping[str, int]) -> None:
        """A commit's changes and the checkpoint after them, atomically."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for table, entries in changes.items():
            handle = self._handles[table]
            for key, value in entries.items():
                if value is None:
                    batch.delete(key, handle)
                else:
                    batch.put(key, value, handle)
        seen_handle = self._handles[SEEN]
        for key, value in seen:
            batch.put(key, value, seen_handle)
        self._mark(batch, checkpoint)
        self._db.write(batch)

    def restore(self, table: str, records: Iterable[tuple[bytes | None, bytes | None]],
                last_offset: int) -> int:
        """Apply changelog records of one table (up to `last_offset`) and move its checkpoint;
        returns how many entries were written."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        handle = self._handles[table]
        n = 0
        if table in APPEND_ONLY:
            for _, value in records:
                for sale_id, digest in unpack_seen(value or b""):
                    batch.put(sale_id, digest, handle)
                    n += 1
        else:
            for key, value in records:
                if key is None:
                    continue
                if value is None:
                    batch.delete(key, handle)
                else:
                    batch.put(key, value, handle)
                n += 1
        self._mark(batch, {table: last_offset})
        self._db.write(batch)
        return n

    def close(self) -> None:
        self._cf.clear()
        self._handles.clear()
        self._db.close()

    @staticmethod
    def wipe(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
