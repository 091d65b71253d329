"""The changelog values of `salesflow.tables`: a customer-month's stores per day survive the
encoding however they were added, and no number of stores can make one unencodable."""

from __future__ import annotations

from datetime import date

from salesflow.tables import MAX_STORES_PER_DAY, CustomerMonth

DAY = date(2025, 3, 1)


def month(stores_by_day: dict[int, tuple[int, ...]] | None = None) -> CustomerMonth:
    return CustomerMonth(7, "2025-03", 100, 1, 100, DAY, DAY, dict(stores_by_day or {}))


def test_stores_added_one_by_one_encode_as_the_whole_table_does() -> None:
    grown = month()
    for day, store in ((1, 121), (2, 122), (1, 123), (1, 121), (3, 121), (2, 120)):
        grown.add_store(date(2025, 3, day), store)
    whole = month({1: (121, 123), 2: (120, 122), 3: (121,)})
    assert grown.stores_by_day == whole.stores_by_day
    assert grown.encode() == whole.encode()
    decoded = CustomerMonth.decode(grown.key, grown.encode())
    assert decoded == whole and decoded.encode() == whole.encode()
    copy = decoded.copy()
    copy.add_store(date(2025, 3, 4), 9)
    assert decoded.encode() == whole.encode()  # a copy's growth is its own


def test_a_day_of_more_stores_than_an_entry_holds_is_still_encoded() -> None:
    busy = month()
    for store in range(1, 400):  # a hostile feed: one customer in 399 stores in one day
        busy.add_store(DAY, store)
    assert len(busy.stores_by_day[1]) == MAX_STORES_PER_DAY
    decoded = CustomerMonth.decode(busy.key, busy.encode())
    assert decoded.stores_by_day == busy.stores_by_day


def test_merged_partials_keep_at_most_an_entry_of_stores_per_day() -> None:
    a, b = month({1: tuple(range(1, 201))}), month({1: tuple(range(201, 401))})
    a.merge(b)
    assert len(a.stores_by_day[1]) == MAX_STORES_PER_DAY
    assert CustomerMonth.decode(a.key, a.encode()).stores_by_day == a.stores_by_day
