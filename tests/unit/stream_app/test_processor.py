"""The processor over the worked examples, with an in-memory store: reasons, marts, aborts."""

from __future__ import annotations

import csv
import random
from collections import Counter
from datetime import date

from mart_builder.metrics import MartRules, customer_rows, data_as_of, team_rows
from producers.rows import parse_sale
from salesflow.codec import Codec
from salesflow.kafka import partition_for
from salesflow.sale import ProductPrice, Sale
from salesflow.tables import (
    COUNTS,
    COUNTS_KEY,
    CUSTOMERS,
    SEEN,
    TEAM,
    CustomerMonth,
    PartitionCounts,
    TeamMonth,
)
from stream_app.processor import Incoming, Output, PartitionState, Processor
from stream_app.validation import StaticDimensions
from tests.marts_expected import (
    DATA_DIR,
    assert_marts_equal,
    load_customers,
    load_expected_customers,
    load_expected_team,
    load_sales_people,
    read_csv,
)

TODAY = date(2026, 11, 26)
CODEC = Codec()


class DictStore:
    """The store protocol in memory: what a committed transaction leaves behind."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[bytes, bytes]] = {}

    def get(self, table: str, key: bytes) -> bytes | None:
        return self.tables.get(table, {}).get(key)

    def get_many(self, table: str, keys: list[bytes]) -> list[bytes | None]:
        return [self.get(table, key) for key in keys]

    def items(self, table: str):
        return iter(sorted(self.tables.get(table, {}).items()))

    def commit(self, state: PartitionState) -> None:
        for table, entries in state.changes().items():
            for key, value in entries.items():
                if value is None:
                    self.tables.setdefault(table, {}).pop(key, None)
                else:
                    self.tables.setdefault(table, {})[key] = value
        self.tables.setdefault(SEEN, {}).update(state.seen_new)


def example_dims() -> StaticDimensions:
    products = {r["name"]: ProductPrice(100) for r in read_csv(DATA_DIR / "product.csv")}
    stores = {int(r["id"]) for r in read_csv(DATA_DIR / "store.csv")}
    return StaticDimensions(set(load_customers()), stores, set(load_sales_people()), products)


def example_messages(batch: int = 5) -> list[Incoming]:
    """The example sales as the producer would send them, packed per partition."""
    offsets = {p: 0 for p in range(6)}
    pending: dict[int, list] = {p: [] for p in range(6)}
    out = []

    def flush(p):
        if pending[p]:
            value = CODEC.encode("sale_batch", {"sales": pending[p]})
            out.append(Incoming("t.sales", p, offsets[p], None, value))
            offsets[p] += 1
            pending[p] = []

    for name in ("sales_part1.csv", "sales_part2.csv"):
        with (DATA_DIR / name).open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                sale = parse_sale(row)
                if isinstance(sale, dict):
                    p = partition_for(sale["sale_id"], 6)
                    pending[p].append(sale)
                    if len(pending[p]) >= batch:
                        flush(p)
        for p in range(6):
            flush(p)
    return out


def processor(dims=None, **kwargs) -> Processor:
    kwargs.setdefault("retry_seconds", 0)
    return Processor(CODEC, dims or example_dims(), 6, today=lambda: TODAY, **kwargs)


def run(proc: Processor, messages: list[Incoming], stores: dict[int, DictStore],
        commit_every: int = 1) -> Output:
    """Messages through the processor, a transaction per `commit_every` messages."""
    out = Output()
    states: dict[int, PartitionState] = {}
    for n, msg in enumerate(messages, 1):
        store = stores.setdefault(msg.partition, DictStore())
        state = states.setdefault(msg.partition, PartitionState(msg.partition, store))
        proc.handle(msg, state, out)
        if n % commit_every == 0:
            for p, s in states.items():
                stores[p].commit(s)
            states.clear()
    for p, s in states.items():
        stores[p].commit(s)
    return out


def aggregates(stores: dict[int, DictStore]) -> tuple[list, list]:
    cust = [CustomerMonth.decode(k, v) for s in stores.values()
            for k, v in s.tables.get(CUSTOMERS, {}).items()]
    team = [TeamMonth.decode(k, v) for s in stores.values()
            for k, v in s.tables.get(TEAM, {}).items()]
    return cust, team


def marts(stores: dict[int, DictStore]):
    cust, team = aggregates(stores)
    rules = MartRules()
    return (customer_rows(cust, load_customers(), rules, data_as_of(cust)),
            team_rows(team, load_sales_people(), rules))


def totals(stores: dict[int, DictStore]) -> PartitionCounts:
    out = PartitionCounts()
    for s in stores.values():
        raw = s.get(COUNTS, COUNTS_KEY)
        if raw:
            out.add(PartitionCounts.decode(raw))
    return out


def expected_stream_rejections():
    """Reasons the stream app decides (the producer catches missing_field/unparseable)."""
    return {(r["sale_id"], r["reason"]) for r in read_csv(DATA_DIR / "expected_rejections.csv")
            if r["reason"] not in ("missing_field", "unparseable", "duplicate")}


def test_examples_give_exactly_the_expected_rejections_and_marts():
    stores: dict[int, DictStore] = {}
    out = run(processor(), example_messages(), stores, commit_every=3)
    assert sorted((d.sale_id, d.reason.value) for d in out.dead) == \
        sorted(expected_stream_rejections())
    assert totals(stores).replays == 5  # the exact duplicates: dropped, not dead-lettered
    customers, team = marts(stores)
    assert_marts_equal(customers, load_expected_customers(), ("customer_id", "sales_date_month"))
    assert_marts_equal(team, load_expected_team(), ("store_id", "sales_person_id", "sales_month"))
    counts = totals(stores)
    assert counts.reconciled and counts.records_in == 116 and counts.accepted == 72
    assert sum(len(accepted) for entries in out.valid.values()
               for _, accepted, _ in entries) == 72


def test_an_aborted_transaction_is_read_again_and_counts_once():
    """Drop a random transaction's state (the abort) and feed its messages again."""
    rng = random.Random(3)
    messages = example_messages(batch=3)
    for _trial in range(30):
        proc, stores = processor(), {}
        cut = rng.randrange(len(messages))
        run(proc, messages[:cut], stores, commit_every=rng.randint(1, 5))
        aborted = messages[cut:cut + rng.randint(1, 6)]
        for msg in aborted:  # processed, then the transaction is dropped
            proc.handle(msg, PartitionState(msg.partition, stores.setdefault(
                msg.partition, DictStore())), Output())
        run(proc, messages[cut:], stores, commit_every=rng.randint(1, 5))
        customers, team = marts(stores)
        assert_marts_equal(customers, load_expected_customers(),
                           ("customer_id", "sales_date_month"))
        assert_marts_equal(team, load_expected_team(),
                           ("store_id", "sales_person_id", "sales_month"))
        assert totals(stores).records_in == 116


def test_a_message_the_state_already_holds_is_skipped():
    proc, stores = processor(), {}
    messages = example_messages()
    run(proc, messages, stores)
    before = {p: dict(s.tables) for p, s in stores.items()}
    out = run(proc, messages[:4], stores)  # group offsets reset behind the state
    assert out.stats["already_applied"] == 4 and not out.valid and not out.dead
    assert {p: dict(s.tables) for p, s in stores.items()} == before


def sale(sale_id: str, customer_id: int = 7, **changes) -> Sale:
    fields = {"store_id": 121, "product_name": "sugar", "sales_date": date(2025, 1, 2),
              "sales_person_id": 1, "price_cents": 5000, "quantity": 1, "total_cents": 5000}
    return Sale(sale_id, customer_id, **(fields | changes))


def at_home(s: Sale, offset: int) -> Incoming:
    return Incoming("t", partition_for(s.sale_id, 6), offset, s.sale_id.encode(),
                    CODEC.encode_sale(s))


def test_unknown_reference_is_parked_then_accepted_when_the_dimension_arrives():
    now = [1000.0]
    dims = StaticDimensions(set(), {121}, {1}, {"sugar": ProductPrice(5000)})
    proc = processor(dims, retry_seconds=60, clock=lambda: now[0])
    msg = at_home(sale("late-1"), 0)
    store = DictStore()
    state = PartitionState(msg.partition, store)
    out = Output()
    proc.handle(msg, state, out)
    store.commit(state)
    assert not out.dead and not out.valid and state.counts.waiting == 1
    state = PartitionState(msg.partition, store)
    assert proc.revisit_parked(state, out, "t") == 1  # still unknown, window still open
    dims.customers.add(7)  # type: ignore[attr-defined]
    now[0] += 5
    assert proc.revisit_parked(state, out, "t") == 0
    store.commit(state)
    [(partition, [(message, accepted, _)])] = out.valid.items()
    assert partition == msg.partition and accepted == [0]
    assert CODEC.decode_sales(message).sales == [sale("late-1")]
    counts = PartitionCounts.decode(store.get(COUNTS, COUNTS_KEY))
    assert (counts.records_in, counts.accepted, counts.waiting) == (1, 1, 0)
    assert not list(store.items("parked"))


def test_unknown_reference_is_dead_lettered_after_the_window():
    now = [1000.0]
    dims = StaticDimensions(set(), {121}, {1}, {"sugar": ProductPrice(5000)})
    proc = processor(dims, retry_seconds=60, clock=lambda: now[0])
    msg = at_home(sale("x"), 3)
    store = DictStore()
    state, out = PartitionState(msg.partition, store), Output()
    proc.handle(msg, state, out)
    now[0] += 61
    proc.revisit_parked(state, out, "t")
    store.commit(state)
    [dead] = out.dead
    assert (dead.sale_id, dead.reason.value, dead.offset) == ("x", "unknown_customer", 3)
    assert dead.value == msg.value
    counts = PartitionCounts.decode(store.get(COUNTS, COUNTS_KEY))
    assert counts.reconciled and counts.waiting == 0


def test_a_sale_on_another_partition_is_forwarded_home_and_never_accepted_there():
    s = sale("wanderer", customer_id=1)
    home = partition_for(s.sale_id, 6)
    away = (home + 1) % 6
    proc, stores = processor(), {}
    batch = CODEC.encode("sale_batch", {"sales": [s.to_record()]})
    out = run(proc, [Incoming("t", away, 0, None, batch),
                     Incoming("t", away, 1, None, CODEC.encode_sale(s))], stores)
    assert out.reroute == [(home, b"wanderer", CODEC.encode_sale(s))] * 2
    assert not out.valid and not out.dead
    counts = totals(stores)
    assert (counts.records_in, counts.rerouted, counts.accepted) == (0, 2, 0)
    # At home the two copies are one sale and one exact replay.
    out = run(proc, [Incoming("t", home, 0, b"wanderer", v) for _, _, v in out.reroute[:1]] +
              [Incoming("t", home, 1, b"wanderer", out.reroute[1][2])], stores)
    counts = totals(stores)
    assert (counts.records_in, counts.accepted, counts.replays) == (2, 1, 1)
    assert counts.reconciled


def test_garbage_is_undecodable_and_counted():
    rng = random.Random(1)
    stores: dict[int, DictStore] = {}
    messages = [Incoming("t", 0, i, None, rng.randbytes(rng.randrange(0, 50))) for i in range(200)]
    out = run(processor(), messages, stores)
    assert Counter(d.reason.value for d in out.dead) == {"undecodable": 200}
    assert totals(stores).records_in == 200 and totals(stores).reconciled


def test_a_record_of_another_kind_is_undecodable_with_its_fingerprint():
    customer = {"customer_id": 1, "first_name": "A", "last_name": "B", "address": "x",
                "pincode": "1", "phone_number": "2", "customer_joining_date": None}
    value = CODEC.encode("customer", customer)
    out = run(processor(), [Incoming("t", 0, 0, None, value)], {})
    [dead] = out.dead
    assert dead.reason.value == "undecodable" and "customer record is not a sale" in dead.message
    assert dead.fingerprint == value[2:10]


def test_a_sale_off_its_list_price_is_flagged_and_still_accepted():
    from salesflow.tables import PRICE_FLAGS, PriceFlag

    dims = StaticDimensions({7}, {121, 122, 123}, {1}, {
        "sugar": ProductPrice(5000, old_cents=4000, updated_date=date(2025, 1, 2))})
    proc, stores = processor(dims), {}
    before = date(2025, 1, 1)  # before the price change: the list price is the old 40.00
    cheap = sale("cheap", sales_date=before, price_cents=3199, total_cents=3199)
    fair = sale("fair", sales_date=before, price_cents=3200, total_cents=3200)  # exactly -20 %
    dear = sale("dear", price_cents=6001, total_cents=6001, store_id=123)  # list 50.00
    usual = [sale(f"usual-{store}", store_id=store) for store in (121, 122)]
    out = run(proc, [at_home(s, i) for i, s in enumerate((cheap, fair, dear, *usual))], stores)
    assert totals(stores).accepted == 5
    flags = {PriceFlag.decode(k, v) for s in stores.values()
             for k, v in s.tables.get(PRICE_FLAGS, {}).items()}
    assert flags == {PriceFlag("cheap", 7, 121, 1, before, 3199, 4000),
                     PriceFlag("dear", 7, 123, 1, date(2025, 1, 2), 6001, 5000)}
    prices = sorted(p for entries in out.valid.values() for _, _, ps in entries for p in ps)
    assert prices == [4000, 4000, 5000, 5000, 5000]  # each accepted sale's list price
    customers, _ = aggregates(stores)
    merged = {}
    for agg in customers:
        for day, ids in agg.days().items():
            merged.setdefault(day, set()).update(ids)
    assert merged == {before: {121}, date(2025, 1, 2): {121, 122, 123}}  # across partitions


def test_no_anomaly_state_when_switched_off():
    from salesflow.tables import PRICE_FLAGS

    dims = StaticDimensions({7}, {121}, {1}, {"sugar": ProductPrice(5000)})
    proc, stores = processor(dims, anomalies=None), {}
    s = sale("cheap", price_cents=100, total_cents=100)
    run(proc, [at_home(s, 0)], stores)
    assert not any(st.tables.get(PRICE_FLAGS) for st in stores.values())
