"""The stream app end to end: real `salesflow stream` workers against the real broker.

Each test has its own namespace (topics, consumer group, changelogs) and its own workers.
Every wait is bounded: a deadline turns a stuck pipeline into a failure, never a hang.
"""

from __future__ import annotations

import csv
import json
import random
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from mart_builder.metrics import merge_customer_months, merge_team_months
from producers.dims import produce_dims
from producers.generate import GenerateSpec, generate
from producers.rows import parse_dimension
from producers.sales import produce_sales
from salesflow.codec import Codec
from salesflow.dead_letters import DeadLetter
from salesflow.kafka import (
    admin,
    client_config,
    delete_namespace,
    ensure_topics,
    partition_for,
    read_all,
)
from salesflow.settings import Settings
from salesflow.tables import CustomerMonth, PartitionCounts
from salesflow.topics import Topics
from stream_app.dlq import SKIP_PRODUCER_SIDE, replay
from tests.conftest import DATA
from tests.workers import (
    StreamWorker,
    accepted_sales,
    aggregates,
    totals,
    wait_until_processed,
    worker_env,
)

pytestmark = pytest.mark.integration
CODEC = Codec()
EXAMPLE_FILES = [DATA / "sales_part1.csv", DATA / "sales_part2.csv"]


# --- helpers ---------------------------------------------------------------------------------

@pytest.fixture
def settings(settings: Settings) -> Settings:
    """conftest's per-test settings, with the leader's periodic mart flush pushed out of the
    test's lifetime: these tests are about the stream (the marts have their own tests), and a
    flush in progress holds up a worker's shutdown."""
    return settings.model_copy(update={"flush_interval_seconds": 3600.0})


@pytest.fixture
def start_worker(tmp_path: Path):
    """Start real workers; every one is stopped (SIGTERM, then SIGKILL) after the test."""
    started: list[StreamWorker] = []

    def start(settings: Settings, name: str = "worker", **env: str) -> StreamWorker:
        worker = StreamWorker(settings, tmp_path, name, **env)
        started.append(worker)
        return worker.start()

    yield start
    crashed = [w.log_path.name for w in started if not alive(w)]
    for worker in started:
        worker.stop()
    for worker in started:  # shown by pytest only when the test failed
        print(f"--- {worker.log_path} (tail) ---\n{worker.log_text(False)[-4000:]}")
    if crashed:
        pytest.fail(f"worker(s) died or crashed during the test: {', '.join(crashed)}")


def alive(worker: StreamWorker) -> bool:
    """Still running, and it never logged an unexpected error."""
    return worker.proc is not None and worker.proc.poll() is None and \
        "unexpected error; exiting" not in worker.log_text(False)


def poll(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """`check()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what} (last: {result!r})")
        time.sleep(every)


def dead_letters(settings: Settings) -> list[DeadLetter]:
    return [DeadLetter.from_message(m.value(), m.key(), m.headers())
            for m in read_all(settings, Topics(settings.namespace).dlq)]


def valid_sale_ids(settings: Settings) -> list[str]:
    return [sale.sale_id for _, sale in accepted_sales(settings)]


def assert_balanced(counts: PartitionCounts) -> None:
    """The data contract's invariant: in = accepted + exact replays + dead-lettered."""
    assert counts.reconciled, counts
    assert counts.waiting == 0, counts


def raw_producer(settings: Settings) -> Producer:
    return Producer(client_config(settings, **{"enable.idempotence": True, "acks": "all",
                                               "linger.ms": 5}))


def flush_checked(producer: Producer, errors: list) -> None:
    assert producer.flush(60) == 0, "messages still queued after 60s"
    assert not errors, errors[:3]


def sale(sale_id: str, customer_id: int = 1, **changes: Any) -> dict[str, Any]:
    return {"sale_id": sale_id, "customer_id": customer_id, "store_id": 121,
            "product_name": "sugar", "sales_date": date(2025, 6, 1), "sales_person_id": 1,
            "price": Decimal("50.00"), "quantity": 2, "total_cost": Decimal("100.00"),
            **changes}


def send_sales(settings: Settings, sales: list[dict[str, Any]]) -> None:
    """Single-sale Avro messages keyed by sale_id, as an upstream system would send them."""
    producer, errors = raw_producer(settings), []
    topic = Topics(settings.namespace).sales
    for s in sales:
        producer.produce(topic, CODEC.encode("sale", s), s["sale_id"].encode(),
                         partition=partition_for(s["sale_id"], settings.partitions),
                         on_delivery=lambda err, _m: err and errors.append(err))
    flush_checked(producer, errors)


def send_customer(settings: Settings, customer_id: int) -> None:
    _, record = parse_dimension("customer", {
        "customer_id": str(customer_id), "first_name": "Late", "last_name": "Comer",
        "address": "Delhi", "pincode": "110011", "phone_number": "9100000000",
        "customer_joining_date": "2025-01-01"})
    producer, errors = raw_producer(settings), []
    producer.produce(Topics(settings.namespace).dim("customer"),
                     CODEC.encode("customer", record), str(customer_id).encode(),
                     on_delivery=lambda err, _m: err and errors.append(err))
    flush_checked(producer, errors)


def cli(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The `salesflow` console script in a subprocess, configured like the workers."""
    return subprocess.run([sys.executable, "-m", "salesflow_cli", *args], capture_output=True,
                          text=True, env=worker_env(settings), cwd=cwd, timeout=120)


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(client_config(settings, **{"group.id": "salesflow-test-reader"}))
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(settings.partitions)}
    finally:
        consumer.close()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# --- a. the worked examples ------------------------------------------------------------------

def test_examples_dead_letter_exactly_the_expected_rejections(settings, start_worker):
    produce_dims(settings, DATA)
    start_worker(settings)
    for path in EXAMPLE_FILES:
        produce_sales(settings, [path])
    wait_until_processed(settings, timeout=60)

    expected = read_csv(DATA / "expected_rejections.csv")
    dead = [(d.sale_id, d.reason.value) for d in dead_letters(settings)]
    assert sorted(dead) == sorted((r["sale_id"], r["reason"]) for r in expected
                                  if r["reason"] != "duplicate")

    counts = totals(settings)
    assert counts.replays == 5  # the exact duplicates: dropped and counted, not dead letters
    assert counts.accepted == 72
    assert_balanced(counts)
    producer_side = sum(r["reason"] in ("missing_field", "unparseable") for r in expected)
    assert counts.dead_lettered_total == len(dead) - producer_side
    rows = sum(len(read_csv(p)) for p in EXAMPLE_FILES)
    assert counts.records_in + producer_side == rows  # every row is accounted for, once
    ids = valid_sale_ids(settings)
    assert len(ids) == len(set(ids)) == 72


# --- b. garbage ------------------------------------------------------------------------------

def test_garbage_is_undecodable_and_the_worker_survives(settings, start_worker):
    produce_dims(settings, DATA)
    worker = start_worker(settings)
    rng = random.Random(20261126)
    topic = Topics(settings.namespace).sales
    good = [sale(f"good-{i}", customer_id=rng.randint(1, 12), quantity=(q := rng.randint(1, 9)),
                 total_cost=Decimal("50.00") * q) for i in range(300)]
    valid_values = [CODEC.encode("sale", s) for s in good[:20]] + [
        CODEC.encode("sale_batch", {"sales": good[i:i + 5]}) for i in range(0, 50, 5)]
    garbage: list[bytes] = []
    for i in range(1000):
        kind = i % 4
        if kind == 0:  # random bytes of any length, including none
            garbage.append(rng.randbytes(rng.randrange(0, 300)))
        elif kind == 1:  # the Avro magic and a fingerprint nobody knows
            garbage.append(b"\xc3\x01" + rng.randbytes(rng.randrange(0, 200)))
        else:  # a valid sale or packed batch, truncated
            whole = rng.choice(valid_values)
            garbage.append(whole[:rng.randrange(0, len(whole))])
    messages = [(None, g, rng.randrange(settings.partitions),
                 rng.randbytes(8) if rng.random() < 0.5 else None) for g in garbage]
    messages += [(s, CODEC.encode("sale", s), partition_for(s["sale_id"], settings.partitions),
                  s["sale_id"].encode()) for s in good]
    rng.shuffle(messages)
    producer, errors = raw_producer(settings), []
    for _sale, value, partition, key in messages:
        producer.produce(topic, value, key, partition=partition,
                         on_delivery=lambda err, _m: err and errors.append(err))
        producer.poll(0)
    flush_checked(producer, errors)
    wait_until_processed(settings, timeout=90)

    assert alive(worker), "the worker died"
    letters = dead_letters(settings)
    assert {d.reason.value for d in letters} == {"undecodable"}
    assert sorted(d.value for d in letters) == sorted(garbage)  # each one, byte for byte
    counts = totals(settings)
    assert counts.accepted == len(good) and counts.records_in == len(good) + len(garbage)
    assert counts.dead_lettered == {"undecodable": len(garbage)}
    assert_balanced(counts)
    assert sorted(valid_sale_ids(settings)) == sorted(s["sale_id"] for s in good)


# --- c. a dimension record that arrives late -------------------------------------------------

def test_sale_waits_for_a_late_customer_within_the_window(settings, start_worker):
    window = 10.0
    s = settings.model_copy(update={"unknown_ref_retry_seconds": window})
    produce_dims(s, DATA)
    start_worker(s)
    sent = time.monotonic()
    send_sales(s, [sale("late-1", customer_id=9001), sale("never-1", customer_id=9002)])
    poll(lambda: totals(s).waiting == 2, window - 2, "both sales parked")
    assert not valid_sale_ids(s) and not dead_letters(s)
    send_customer(s, 9001)

    poll(lambda: "late-1" in valid_sale_ids(s), window, "late-1 accepted")
    accepted_after = time.monotonic() - sent
    assert accepted_after < window, f"accepted after {accepted_after:.1f}s: not by the customer"

    letters = poll(lambda: dead_letters(s), 2 * window, "never-1 dead-lettered")
    rejected_after = time.monotonic() - sent
    assert [(d.sale_id, d.reason.value) for d in letters] == [("never-1", "unknown_customer")]
    assert rejected_after >= window - 1, f"rejected after {rejected_after:.1f}s, inside window"
    counts = poll(lambda: (c := totals(s)).waiting == 0 and c, 10, "nothing parked")
    assert (counts.records_in, counts.accepted, counts.dead_lettered) == \
        (2, 1, {"unknown_customer": 1})
    assert_balanced(counts)
    assert valid_sale_ids(s) == ["late-1"]
    # Parked sales are taken up by the worker's own timer: nothing is ever written to the
    # sales topic for them, so it stands still and the group catches up with it.
    wait_until_processed(s, timeout=30)
    ends = end_offsets(s, Topics(s.namespace).sales)
    time.sleep(3)
    assert end_offsets(s, Topics(s.namespace).sales) == ends, "ticks keep coming"


# --- d. replaying a dead letter after fixing its cause ---------------------------------------

def test_replayed_dead_letter_is_accepted_exactly_once(settings, start_worker, tmp_path):
    # A short retry window: a dimension record and a sale sent right after it may reach the
    # worker in either order (its dimension reader is a thread of its own); the window is what
    # covers that, for the probe and the replayed sale below.
    settings = settings.model_copy(update={"unknown_ref_retry_seconds": 4.0})
    produce_dims(settings, DATA)
    start_worker(settings)
    bad_file = tmp_path / "bad.csv"
    bad_file.write_text("sale_id,customer_id,store_id,product_name,sales_date,"
                        "sales_person_id,price,quantity,total_cost\n"
                        "row-1,,121,sugar,2025-06-01,1,50.00,2,100.00\n", encoding="utf-8")
    produce_sales(settings, [bad_file])  # a producer-side dead letter: not replayable as is
    send_sales(settings, [sale("fix-1", customer_id=9100)])
    poll(lambda: len(dead_letters(settings)) == 2, 30, "fix-1 dead-lettered after its window")
    assert sorted((d.sale_id, d.reason.value) for d in dead_letters(settings)) == \
        [("fix-1", "unknown_customer"), ("row-1", "missing_field")]

    shown = cli(settings, "dlq", "show", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    listed = {d["sale_id"]: d for d in json.loads(shown.stdout)}
    assert listed["fix-1"]["reason"] == "unknown_customer"
    assert listed["row-1"]["origin"] == f"{bad_file}:2" and listed["row-1"]["side"] == "producer"
    table = cli(settings, "dlq", "show", "--reason", "missing_field", cwd=tmp_path)
    assert table.returncode == 0 and "row-1" in table.stdout and "fix-1" not in table.stdout

    dry = cli(settings, "dlq", "replay", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "would replay 1" in dry.stdout and f"1 {SKIP_PRODUCER_SIDE}" in dry.stdout

    # Fix the cause, and make sure the worker has seen the fix before replaying.
    send_customer(settings, 9100)
    send_sales(settings, [sale("probe-1", customer_id=9100)])
    poll(lambda: "probe-1" in valid_sale_ids(settings), 30, "the worker knows customer 9100")

    done = cli(settings, "dlq", "replay", "--reason", "unknown_customer", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "replayed 1" in done.stdout, done.stdout
    poll(lambda: "fix-1" in valid_sale_ids(settings), 30, "the replayed fix-1 accepted")
    wait_until_processed(settings, timeout=60)
    assert sorted(valid_sale_ids(settings)) == ["fix-1", "probe-1"]
    before = totals(settings)
    assert (before.accepted, before.replays, before.waiting) == (2, 0, 0)

    again = replay(settings, reason="unknown_customer")  # harmless: an exact replay
    assert again.replayed == 1
    wait_until_processed(settings, timeout=60)
    after = totals(settings)
    assert (after.records_in - before.records_in, after.replays - before.replays,
            after.accepted, after.dead_lettered) == (1, 1, 2, before.dead_lettered)
    assert sorted(valid_sale_ids(settings)) == ["fix-1", "probe-1"]
    assert len(dead_letters(settings)) == 2  # nothing new was rejected
    assert_balanced(after)


# --- e. two workers share the partitions -----------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assigned_sales_partitions(worker: StreamWorker) -> set[int] | None:
    """The sales partitions the worker holds, from its log (None before any assignment)."""
    held: set[int] | None = None
    for verb, parts in re.findall(r"(assigned|released) partitions \[([0-9, ]*)\]",
                                  worker.log_text(False)):
        numbers = {int(p) for p in parts.split(",") if p.strip()}
        held = (held or set()) | numbers if verb == "assigned" else (held or set()) - numbers
    return held


def records_in(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(r"^salesflow_stream_records_in_total ([0-9.e+]+)$", text, re.M)
    assert match, "no records-in counter on /metrics"
    return float(match.group(1))


def merged_aggregates(settings: Settings) -> tuple[dict, dict]:
    """The `customers` and `team` changelogs summed over partitions."""
    customer_parts, team_parts = aggregates(settings)
    return merge_customer_months(customer_parts), merge_team_months(team_parts)


def test_two_workers_split_the_partitions_and_agree_with_one(settings, start_worker,
                                                              tmp_path):
    data = tmp_path / "generated"
    sales_file = generate(data, GenerateSpec(rows=5000, bad_fraction=0.05))
    shared = settings
    single = settings.model_copy(update={"namespace": f"{settings.namespace}-one",
                                         "mart_db_url": f"sqlite:///{tmp_path / 'one.db'}"})
    for s in (shared, single):
        produce_dims(s, data)
    ports = free_port(), free_port()
    a = start_worker(shared, "a", SALESFLOW_METRICS_PORT=str(ports[0]))
    b = start_worker(shared, "b", SALESFLOW_METRICS_PORT=str(ports[1]))
    start_worker(single, "one")

    def split() -> bool:
        pa, pb = assigned_sales_partitions(a), assigned_sales_partitions(b)
        return bool(pa and pb and not pa & pb and pa | pb == set(range(shared.partitions)))

    poll(split, 60, "both workers hold disjoint halves of the sales partitions")

    summaries = [produce_sales(s, [sales_file]) for s in (shared, single)]
    assert summaries[0].line() == summaries[1].line()
    for s in (shared, single):
        wait_until_processed(s, timeout=90)

    assert alive(a) and alive(b), "a worker crashed (see its log)"
    seen_by = [records_in(p) for p in ports]
    assert all(n > 0 for n in seen_by), f"records in per worker: {seen_by}"
    counts_two, counts_one = totals(shared), totals(single)
    assert sum(seen_by) == counts_two.records_in
    assert counts_two.minus(PartitionCounts()) == counts_one.minus(PartitionCounts())
    assert_balanced(counts_two)
    assert counts_two.records_in == summaries[0].sent
    assert counts_two.accepted > 4000 and counts_two.dead_lettered_total > 50
    customers_two, team_two = merged_aggregates(shared)
    customers_one, team_one = merged_aggregates(single)
    assert customers_two == customers_one and team_two == team_one
    assert sum(v.count for v in customers_two.values()) == counts_two.accepted
    assert sum(v.count for v in team_two.values()) == counts_two.accepted
    assert sorted((d.sale_id, d.reason) for d in dead_letters(shared)) == \
        sorted((d.sale_id, d.reason) for d in dead_letters(single))


# --- e. local state ----------------------------------------------------------------------------

def test_a_worker_forgets_local_state_when_its_topics_are_created_anew(settings, start_worker):
    """The `seen` table is on disk. After the namespace's topics and group are deleted and
    created again (a wiped broker), a worker restarted in the same folder must not remember
    the old sale ids: it would take the new sales for replays of them."""
    sales = [sale(f"again-{i}", total_cost=Decimal(f"{i}.00"), price=Decimal(f"{i}.00"),
                  quantity=1) for i in range(1, 41)]
    produce_dims(settings, DATA)
    worker = start_worker(settings)
    send_sales(settings, sales)
    wait_until_processed(settings, timeout=60)
    assert totals(settings).accepted == len(sales)
    worker.stop()

    wipe_namespace(settings)
    produce_dims(settings, DATA)
    worker.start()
    send_sales(settings, sales)
    wait_until_processed(settings, timeout=60)
    counts = totals(settings)
    assert (counts.accepted, counts.replays) == (len(sales), 0), counts
    assert "belongs to another changelog" in worker.log_text()


def wipe_namespace(settings: Settings) -> None:
    """Delete every topic of the namespace and the stream app's group, as a wiped broker."""
    delete_namespace(settings)
    client = admin(settings)  # held: a collected client never completes its futures
    group = Topics(settings.namespace).app_id
    for future in client.delete_consumer_groups([group], request_timeout=30).values():
        future.result(timeout=30)


def test_a_table_recovery_longer_than_its_bound_exits_the_worker(settings, tmp_path):
    """Recovery is bounded and logged: a worker that must restore a large changelog within
    1 s says how far it got and exits (its supervisor restarts it), instead of hanging."""
    topic = Topics(settings.namespace).changelog("customers")
    ensure_topics(settings, [topic])
    producer, errors = raw_producer(settings), []
    value = CustomerMonth(1, "2025-06", 100, 1, 100, date(2025, 6, 1), date(2025, 6, 1)).encode()
    for i in range(600_000):
        key = CustomerMonth(i, "2025-06").key
        while True:
            try:
                producer.produce(topic, value, key, partition=i % 6,
                                 on_delivery=lambda err, _m: err and errors.append(err))
                break
            except BufferError:
                producer.poll(0.1)
    flush_checked(producer, errors)

    worker = StreamWorker(settings, tmp_path, "recovering", SALESFLOW_RECOVERY_TIMEOUT_SECONDS="1")
    worker.start(wait=0)
    try:
        assert worker.proc is not None and worker.proc.wait(120) == 75
    finally:
        worker.kill()
    log = worker.log_text()
    assert re.search(r"table recovery did not finish within 1 s \(\d+ changelog records to go\)",
                     log), log[-3000:]


# --- f. home partitions, forged control traffic, partition counts ----------------------------

def test_a_sale_sent_to_three_partitions_counts_once(settings, start_worker):
    """An upstream client with another partitioner: copies of one sale_id on three partitions
    are forwarded to its home partition and meet there (one sale, two exact replays)."""
    produce_dims(settings, DATA)
    start_worker(settings)
    s = sale("wanderer-1", customer_id=3)
    home = partition_for(s["sale_id"], settings.partitions)
    producer, errors = raw_producer(settings), []
    for offset in range(3):
        producer.produce(Topics(settings.namespace).sales, CODEC.encode("sale", s),
                         partition=(home + offset) % settings.partitions,
                         on_delivery=lambda err, _m: err and errors.append(err))
    flush_checked(producer, errors)
    poll(lambda: totals(settings).records_in == 3, 30, "three copies counted at home")
    wait_until_processed(settings, timeout=60)
    counts = totals(settings)
    assert (counts.records_in, counts.accepted, counts.replays, counts.rerouted) == (3, 1, 2, 2)
    assert_balanced(counts)
    assert [(p, sale.sale_id) for p, sale in accepted_sales(settings)] == [(home, "wanderer-1")]


def test_control_headers_and_tick_values_from_outside_are_plain_data(settings, start_worker):
    """The worker takes parked sales up by its own timer: a `salesflow-tick` message is just an
    undecodable record, and a forged first-seen header changes nothing."""
    produce_dims(settings, DATA)
    start_worker(settings)
    topic, partition = Topics(settings.namespace).sales, 0
    producer, errors = raw_producer(settings), []
    producer.produce(topic, b"salesflow-tick", partition=partition,
                     on_delivery=lambda err, _m: err and errors.append(err))
    forged = sale("forged-1")
    producer.produce(topic, CODEC.encode("sale", forged), forged["sale_id"].encode(),
                     partition=partition_for("forged-1", settings.partitions),
                     headers=[("salesflow-first-seen", b"0")],
                     on_delivery=lambda err, _m: err and errors.append(err))
    flush_checked(producer, errors)
    wait_until_processed(settings, timeout=60)
    counts = totals(settings)
    assert (counts.records_in, counts.accepted, counts.waiting) == (2, 1, 0)
    assert counts.dead_lettered == {"undecodable": 1}
    assert_balanced(counts)


def test_a_worker_refuses_a_sales_topic_with_another_partition_count(settings, tmp_path):
    """State partitioned six ways cannot serve a topic with eight partitions: one clear line,
    a non-zero exit, nothing processed."""
    produce_dims(settings, DATA)
    topics = Topics(settings.namespace)
    ensure_topics(settings, list(topics.changelogs.values()), partitions=6)
    client = admin(settings)
    from confluent_kafka.admin import NewPartitions

    for future in client.create_partitions([NewPartitions(topics.sales, 8)]).values():
        future.result(timeout=30)
    result = cli(settings, "stream", cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "8 partitions but the stream state" in line and "Changing the partition count" in line


def test_sigterm_commits_the_batch_in_flight_and_exits_within_seconds(settings, start_worker,
                                                                     tmp_path):
    produce_dims(settings, DATA)
    worker = StreamWorker(settings, tmp_path, "stopped").start()
    data = generate(tmp_path / "gen", GenerateSpec(rows=20_000))
    sender = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from producers.sales import produce_sales; "
        "from tests.workers import worker_env; from salesflow.settings import Settings; "
        f"produce_sales(Settings(_env_file=None, kafka_bootstrap={settings.kafka_bootstrap!r},"
        f" namespace={settings.namespace!r}), [Path({str(data)!r})], batch_size=20)")],
        cwd=Path(__file__).resolve().parents[2])
    try:
        poll(lambda: totals(settings).records_in > 0, 60, "the worker is processing")
        started = time.monotonic()
        assert worker.stop(timeout=10) == 0
        stopped_after = time.monotonic() - started
    finally:
        sender.wait(120)
        worker.kill()
    assert stopped_after < 5, f"SIGTERM took {stopped_after:.1f}s"
    # Nothing it had processed is lost: a new worker finishes the topic, exactly once.
    start_worker(settings, "second")
    wait_until_processed(settings, timeout=120)
    counts = totals(settings)
    assert counts.records_in == 20_000 and counts.reconciled
    assert len(accepted_sales(settings)) == counts.accepted


def test_a_worker_runs_in_process_and_stops_cleanly(settings, tmp_path):
    """The worker is an object made from Settings: started in a thread, stopped by a call."""
    import threading

    from stream_app.worker import Worker

    s = settings.model_copy(update={"state_dir": tmp_path / "state"})
    produce_dims(s, DATA)
    worker = Worker(s)
    thread = threading.Thread(target=worker.run, name="worker")
    thread.start()
    try:
        assert worker.wait_ready(60)
        for path in EXAMPLE_FILES:
            produce_sales(s, [path])
        wait_until_processed(s, timeout=60)
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()
    counts = totals(s)
    assert (counts.accepted, counts.replays) == (72, 5)
    assert_balanced(counts)


def test_migrating_to_more_partitions_keeps_exactly_the_accepted_sales(settings, start_worker,
                                                                      tmp_path):
    produce_dims(settings, DATA)
    start_worker(settings)
    for path in EXAMPLE_FILES:
        produce_sales(settings, [path])
    wait_until_processed(settings, timeout=60)
    before = sorted(sale.sale_id for _, sale in accepted_sales(settings))

    target = settings.model_copy(update={"namespace": f"{settings.namespace}-8",
                                         "partitions": 8})
    result = cli(settings, "migrate", "--to", target.namespace, "--partitions", "8",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "72 accepted sales" in result.stdout
    try:
        start_worker(target, "new")
        wait_until_processed(target, timeout=60)
        after = accepted_sales(target)
        assert sorted(sale.sale_id for _, sale in after) == before
        assert all(p == partition_for(sale.sale_id, 8) for p, sale in after)
        counts = totals(target)
        assert (counts.records_in, counts.accepted) == (72, 72) and counts.reconciled
    finally:
        delete_namespace(target, wait=False)
