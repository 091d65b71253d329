"""What a restated table holds: only changed rows are written, vanished rows are deleted,
refused rows keep what the table held."""

from __future__ import annotations

from operator import itemgetter

from mart_builder.mirror import Mirror, Restated

SPEC = Restated("t", (0, 1), itemgetter(0))  # rows: (owner, month, value)


def mirror_of(*rows: tuple) -> Mirror:
    mirror = Mirror(SPEC)
    mirror.load(rows)
    return mirror


def test_unchanged_rows_are_not_written_and_changed_ones_are() -> None:
    mirror = mirror_of((1, "a", 10), (1, "b", 20), (2, "a", 5))
    diff = mirror.diff([(1, [(1, "a", 10), (1, "b", 21), (1, "c", 1)])])
    assert diff.upserts == [(1, "b", 21), (1, "c", 1)]
    assert diff.deletes == []
    mirror.commit(diff)
    assert mirror.diff([(1, [(1, "a", 10), (1, "b", 21), (1, "c", 1)])]).upserts == []
    assert mirror.size == 4


def test_rows_an_owner_no_longer_has_are_deleted() -> None:
    mirror = mirror_of((1, "a", 10), (1, "b", 20), (2, "a", 5))
    diff = mirror.diff([(1, [(1, "b", 20)]), (2, [])])
    assert (diff.upserts, sorted(diff.deletes)) == ([], [(1, "a"), (2, "a")])
    mirror.commit(diff)
    assert mirror.rows == {1: {(1, "b"): hash((1, "b", 20))}}


def test_a_refused_row_keeps_what_the_table_held_and_is_quarantined() -> None:
    mirror = mirror_of((1, "a", 10))
    diff = mirror.diff([(1, [(1, "a", 99), (1, "b", 98)])])
    mirror.commit(diff, refused=[(1, "a"), (1, "b")])
    assert mirror.rows == {1: {(1, "a"): hash((1, "a", 10))}}
    assert mirror.quarantined == {(1, "a"), (1, "b")}
    # the same values again are tried again (the table still holds the old ones) ...
    again = mirror.diff([(1, [(1, "a", 99)])])
    assert again.upserts == [(1, "a", 99)]
    assert mirror.released(again) == [(1, "a")]
    # ... and once written, the key leaves the quarantine
    mirror.commit(again)
    assert mirror.quarantined == {(1, "b")}


def test_kept_columns_are_not_compared() -> None:
    spec = Restated("t", (0,), itemgetter(0), keep=frozenset({"first_seen"}), ignore_at=(2,))
    mirror = Mirror(spec)
    mirror.load([(1, "x", "2025-01-01")])
    assert mirror.diff([(1, [(1, "x", "2025-06-01")])]).upserts == []
    assert mirror.diff([(1, [(1, "y", "2025-06-01")])]).upserts == [(1, "y", "2025-06-01")]
