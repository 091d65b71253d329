"""The processor over the worked examples, with dicts for tables: reasons, marts, crashes."""

from __future__ import annotations

import copy
import csv
import random
from datetime import date

from mart_builder.metrics import MartRules, customer_rows, data_as_of, team_rows
from producers.rows import parse_sale
from salesflow.codec import Codec
from salesflow.kafka import partition_for
from stream_app import state
from stream_app.processor import RETRY_HEADER, TICK, Incoming, Processor, Tables
from stream_app.validation import Dimensions
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


def example_dims() -> Dimensions:
    products = {r["name"] for r in read_csv(DATA_DIR / "product.csv")}
    stores = {int(r["id"]) for r in read_csv(DATA_DIR / "store.csv")}
    return Dimensions(set(load_customers()), stores, set(load_sales_people()), products)


def example_messages(batch: int = 5) -> list[Incoming]:
    """The example sales as the producer would send them, packed per partition."""
    offsets = {p: 0 for p in range(6)}
    pending: dict[int, list] = {p: [] for p in range(6)}
    out = []

    def flush(p):
        if pending[p]:
            value = CODEC.encode("sale_batch", {"sales": pending[p]})
            out.append(Incoming("t.sales", p, offsets[p], None, value, {}))
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


def new_tables() -> dict[str, dict]:
    return {name: {} for name in ("seen", "customers", "team", "parked", "counts")}


def run(processor, messages, stores):
    effects = []
    for msg in messages:
        tables = Tables(**stores)
        effects.append(processor.handle(msg, tables))
        tables.commit()
    return effects


def marts(stores):
    cust = [state.to_customer_month(k, v) for k, v in stores["customers"].items()]
    team = [state.to_team_month(k, v) for k, v in stores["team"].items()]
    rules = MartRules()
    return (customer_rows(cust, load_customers(), rules, data_as_of(cust)),
            team_rows(team, load_sales_people(), rules))


def expected_stream_rejections():
    """Reasons the stream app decides (the producer catches missing_field/unparseable)."""
    return {(r["sale_id"], r["reason"]) for r in read_csv(DATA_DIR / "expected_rejections.csv")
            if r["reason"] not in ("missing_field", "unparseable", "duplicate")}


def test_examples_give_exactly_the_expected_rejections_and_marts():
    processor = Processor(CODEC, example_dims(), retry_seconds=0, today=lambda: TODAY)
    stores = new_tables()
    effects = run(processor, example_messages(), stores)
    dead = [(d.sale_id, d.reason.value) for fx in effects for d in fx.dead]
    assert sorted(dead) == sorted(expected_stream_rejections())
    replays = sum(fx.counts["replays"] for fx in effects)
    assert replays == 5  # the exact duplicates are dropped, not dead-lettered
    customers, team = marts(stores)
    assert_marts_equal(customers, load_expected_customers(), ("customer_id", "sales_date_month"))
    assert_marts_equal(team, load_expected_team(), ("store_id", "sales_person_id", "sales_month"))
    totals = sum((fx.counts for fx in effects), start=__import__("collections").Counter())
    dead_total = sum(v for k, v in totals.items() if k.startswith("dead_lettered:"))
    assert totals["in"] == totals["accepted"] + totals["replays"] + dead_total


def test_crash_and_redelivery_counts_every_sale_exactly_once():
    """Lose a random subset of the last writes, then redeliver from an earlier offset."""
    rng = random.Random(3)
    messages = example_messages(batch=3)
    for _trial in range(30):
        processor = Processor(CODEC, example_dims(), retry_seconds=0, today=lambda: TODAY)
        stores = new_tables()
        cut = rng.randrange(len(messages))
        run(processor, messages[:cut], stores)
        snapshot = copy.deepcopy(stores)
        run(processor, messages[cut:], stores)
        # The crash: each key written after the snapshot keeps its new value or loses it.
        crashed = {}
        for name, table in stores.items():
            crashed[name] = dict(snapshot[name])
            for key, value in table.items():
                if rng.random() < 0.5:
                    crashed[name][key] = value
        # Redeliver everything from a committed offset at or before the cut.
        restart = rng.randrange(cut + 1)
        run(processor, messages[restart:], crashed)
        customers, team = marts(crashed)
        assert_marts_equal(customers, load_expected_customers(),
                           ("customer_id", "sales_date_month"))
        assert_marts_equal(team, load_expected_team(),
                           ("store_id", "sales_person_id", "sales_month"))


class Recording(dict):
    """A table that remembers which keys were written (what went to its changelog)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.written: set = set()

    def __setitem__(self, key, value) -> None:
        self.written.add(key)
        super().__setitem__(key, value)


def test_redelivery_writes_again_the_seen_entries_an_on_disk_store_kept():
    """`seen` is on disk: after a kill it may hold a message's entries whose changelog
    records were lost. The redelivered message must write them again, or a worker that later
    recovers `seen` from the changelog would take a replay of those sales for a new sale."""
    processor = Processor(CODEC, example_dims(), retry_seconds=0, today=lambda: TODAY)
    messages = example_messages()
    stores = new_tables()
    run(processor, messages, stores)
    by_message: dict[tuple[int, int], set[str]] = {}
    for sale_id, (_, offset, _) in stores["seen"].items():
        by_message.setdefault((partition_for(sale_id, 6), offset), set()).add(sale_id)
    redelivered = max(messages, key=lambda m: len(by_message.get((m.partition, m.offset), ())))
    kept = by_message[(redelivered.partition, redelivered.offset)]
    assert len(kept) > 1
    before = copy.deepcopy(stores)
    stores["seen"] = Recording(stores["seen"])
    run(processor, [redelivered], stores)
    assert stores["seen"].written == kept
    assert (stores["customers"], stores["team"]) == (before["customers"], before["team"])


def test_unknown_reference_is_parked_then_accepted_when_the_dimension_arrives():
    now = [1000.0]
    dims = Dimensions(set(), {121}, {1}, {"sugar"})
    processor = Processor(CODEC, dims, retry_seconds=60, clock=lambda: now[0],
                          today=lambda: TODAY)
    stores = new_tables()
    sale = {"sale_id": "late-1", "customer_id": 7, "store_id": 121, "product_name": "sugar",
            "sales_date": date(2025, 1, 2), "sales_person_id": 1,
            "price": __import__("decimal").Decimal("50.00"), "quantity": 1,
            "total_cost": __import__("decimal").Decimal("50.00")}
    [fx] = run(processor, [Incoming("t", 0, 0, b"late-1", CODEC.encode("sale", sale), {})],
               stores)
    assert not fx.dead and not fx.valid and fx.counts["pending"] == 1
    [fx] = run(processor, [Incoming("t", 0, 1, None, TICK, {})], stores)
    assert not fx.republish  # still unknown, window still open
    dims.customers.add(7)
    [fx] = run(processor, [Incoming("t", 0, 2, None, TICK, {})], stores)
    [(key, value, first_seen)] = fx.republish
    assert first_seen == 1000.0
    [fx] = run(processor, [Incoming("t", 0, 3, key, value,
                                    {RETRY_HEADER: str(first_seen).encode()})], stores)
    assert [sid for sid, _ in fx.valid] == ["late-1"] and not fx.dead
    assert fx.counts["pending"] == -1 and fx.counts["accepted"] == 1


def test_unknown_reference_is_dead_lettered_after_the_window():
    now = [1000.0]
    processor = Processor(CODEC, Dimensions(set(), {121}, {1}, {"sugar"}), retry_seconds=60,
                          clock=lambda: now[0], today=lambda: TODAY)
    stores = new_tables()
    sale = {"sale_id": "x", "customer_id": 7, "store_id": 121, "product_name": "sugar",
            "sales_date": date(2025, 1, 2), "sales_person_id": 1,
            "price": __import__("decimal").Decimal("50.00"), "quantity": 1,
            "total_cost": __import__("decimal").Decimal("50.00")}
    run(processor, [Incoming("t", 0, 0, b"x", CODEC.encode("sale", sale), {})], stores)
    now[0] += 61
    [fx] = run(processor, [Incoming("t", 0, 1, None, TICK, {})], stores)
    [(key, value, first_seen)] = fx.republish
    [fx] = run(processor, [Incoming("t", 0, 2, key, value,
                                    {RETRY_HEADER: str(first_seen).encode()})], stores)
    assert [(d.sale_id, d.reason.value) for d in fx.dead] == [("x", "unknown_customer")]


def test_garbage_is_undecodable_and_counted():
    processor = Processor(CODEC, example_dims(), retry_seconds=0, today=lambda: TODAY)
    rng = random.Random(1)
    stores = new_tables()
    messages = [Incoming("t", 0, i, None, rng.randbytes(rng.randrange(0, 50)), {})
                for i in range(200)]
    effects = run(processor, messages, stores)
    assert all(len(fx.dead) == 1 and fx.dead[0].reason.value == "undecodable" for fx in effects)
    assert stores["counts"]["0"]["totals"]["in"] == 200
