"""What a restated table holds, so that a flush writes only the rows that changed.

A *restated* table is one whose rows are recomputed in groups: all rows of one *owner* (a
customer, a store) at once, because one new sale changes lifetime, rank and YTD figures across
them. The mirror keeps, per owner, a digest of every row the table holds (loaded from the
table once, then kept in step with every committed write). Diffing an owner's recomputed rows
against it gives the rows to upsert (new, or any of their values changed) and the keys to
delete (rows the owner no longer has). A row whose values are all unchanged is not written.

`sales_anomalies` is restated the same way, its rows owned by a customer or a store, with
`first_flagged_at` kept across restatements (`Restated.keep`, left out of the digests).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from mart_builder.metrics import Values

Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Restated:
    """A restated table: its name, the positions of its key in a row, whose rows it is."""

    table: str
    key_at: tuple[int, ...]
    owner: Callable[[Values], Hashable]
    keep: frozenset[str] = frozenset()  # columns set on insert and kept by later upserts
    # positions left out of the comparison (the kept columns: the builder never recomputes
    # them, the table holds the first value)
    ignore_at: tuple[int, ...] = ()

    def key(self, row: Values) -> Key:
        return tuple(row[i] for i in self.key_at)

    def keys(self) -> Callable[[Values], Key]:
        """`key` as a C-speed function (the hot path of a diff)."""
        if len(self.key_at) == 1:
            (at,) = self.key_at
            return lambda row: (row[at],)
        return itemgetter(*self.key_at)

    def digest(self, row: Values) -> int:
        if self.ignore_at:
            row = tuple(v for i, v in enumerate(row) if i not in self.ignore_at)
        return hash(row)


@dataclass(slots=True)
class Diff:
    """The writes one flush makes to one restated table, and what the mirror becomes once
    they are committed."""

    upserts: list[Values] = field(default_factory=list)
    deletes: list[Key] = field(default_factory=list)
    after: dict[Hashable, dict[Key, int]] = field(default_factory=dict)


class Mirror:
    """Digests of the rows one restated table holds, by owner, then by row key."""

    def __init__(self, spec: Restated) -> None:
        self.spec = spec
        self.rows: dict[Hashable, dict[Key, int]] = {}
        self.quarantined: set[Key] = set()
        self.loaded = False

    def load(self, rows: Iterable[Values], quarantined: Iterable[Key] = ()) -> None:
        """What the table holds now (replacing anything known before)."""
        spec = self.spec
        self.rows = {}
        key_of, owner_of, digest_of = spec.keys(), spec.owner, spec.digest
        for row in rows:
            self.rows.setdefault(owner_of(row), {})[key_of(row)] = digest_of(row)
        self.quarantined = set(quarantined)
        self.loaded = True

    def diff(self, computed: Iterable[tuple[Hashable, Sequence[Values]]]) -> Diff:
        """Owners with all their rows as computed now (an owner without rows: all its rows
        go) -> what to write."""
        out = Diff()
        for _ in self.stream(computed, out):
            pass
        return out

    def stream(self, computed: Iterable[tuple[Hashable, Sequence[Values]]],
               out: Diff) -> Iterator[Values]:
        """`diff`, lazily: yields each row to upsert as soon as it is known (the writer sends
        one statement while the next is computed); `out` is complete once it is exhausted."""
        spec = self.spec
        key_of = spec.keys()
        digest_of = spec.digest if spec.ignore_at else hash
        upserts, after, held_rows = out.upserts, out.after, self.rows
        for owner, rows in computed:
            held = held_rows.get(owner, {})
            now: dict[Key, int] = {}
            for row in rows:
                key, digest = key_of(row), digest_of(row)
                now[key] = digest
                if held.get(key) != digest:
                    upserts.append(row)
                    yield row
            if held:
                out.deletes.extend(k for k in held if k not in now)
            after[owner] = now

    def released(self, diff: Diff) -> list[Key]:
        """Quarantined keys that this diff writes or deletes (their entry ends with it)."""
        if not self.quarantined:
            return []
        key_of = self.spec.keys()
        keys = [key_of(r) for r in diff.upserts] + diff.deletes
        return [k for k in keys if k in self.quarantined]

    def added(self, diff: Diff, refused: Iterable[Key] = ()) -> list[Values]:
        """The rows this diff writes whose keys the table did not hold (asked before
        `commit`; refused rows were not written)."""
        refused = set(refused)
        key_of, owner_of, rows = self.spec.keys(), self.spec.owner, self.rows
        return [r for r in diff.upserts if (key := key_of(r)) not in refused
                and key not in rows.get(owner_of(r), {})]

    def commit(self, diff: Diff, refused: Iterable[Key] = ()) -> None:
        """The diff's transaction committed: the table now holds `diff.after`, except the
        refused rows, which keep what the table held before (or nothing)."""
        refused = set(refused)
        for owner, now in diff.after.items():
            if refused:
                held = self.rows.get(owner, {})
                for key in refused.intersection(now):
                    if key in held:
                        now[key] = held[key]
                    else:
                        del now[key]
            if now:
                self.rows[owner] = now
            else:
                self.rows.pop(owner, None)
        if self.quarantined:
            key_of = self.spec.keys()
            self.quarantined -= {key_of(r) for r in diff.upserts}
            self.quarantined -= set(diff.deletes)
        self.quarantined |= refused

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.rows.values())
