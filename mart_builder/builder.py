"""The mart builder: the stream app's aggregates in, changed mart rows out, every few seconds.

It follows the changelogs of the stream app's `customers`, `team` and `counts` tables and the
dimension topics (`changelogs.ChangelogReader`), so it needs no access to the workers' memory
and a restarted builder simply reads them again. A flush:
1. reads what was committed since the last one (up to the last stable offsets of now);
2. recomputes only what a change can affect: every row of each customer and each store whose
   aggregates or names changed (a late sale restates its month and every lifetime, rank, YTD,
   growth and contribution figure of that customer or store), and, when the as_of date moves,
   the customers whose inactive_status flips;
3. compares those rows with what the table holds (`mirror.Mirror`, loaded from the table) and
   writes only the rows whose values differ, and deletes rows that no longer exist, in ONE
   transaction with the dimension records and the flush log;
4. only once that committed, remembers what the tables hold and how fresh they are.
A flush that fails keeps everything it had to do, so the next one does it: nothing read is
lost. Rows the database refuses are quarantined (`writer.MartWriter.apply`), not retried
until their values change again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from operator import itemgetter

from mart_builder.anomalies import FIRST_FLAGGED_AT, Owner, owner_of
from mart_builder.cancel import CancelCheck, checker, never
from mart_builder.changelogs import ChangelogReader
from mart_builder.metrics import MartRules, Values, customer_values, store_values
from mart_builder.mirror import Diff, Mirror, Restated
from mart_builder.schema import customers_data_mart, sales_anomalies, sales_team_data_mart
from mart_builder.state import Aggregates, Dimensions, Freshness
from mart_builder.writer import MartWriter, Refusal, TableChanges
from salesflow import instrumentation
from salesflow.anomalies import AnomalyRules
from salesflow.codec import codec_for
from salesflow.dead_letters import Rejection
from salesflow.dimensions import read_record
from salesflow.settings import Settings
from salesflow.tables import COUNTS, CUSTOMERS, PRICE_FLAGS, TEAM
from salesflow.topics import Topics

log = logging.getLogger("salesflow.marts")

CUSTOMER_MART = Restated(customers_data_mart.name, (0, 4), itemgetter(0))
TEAM_MART = Restated(sales_team_data_mart.name, (0, 1, 3), itemgetter(0))
ANOMALIES = Restated(sales_anomalies.name, (0, 1), owner_of,
                     keep=frozenset({"first_flagged_at"}), ignore_at=(FIRST_FLAGGED_AT,))
RESTATED = (CUSTOMER_MART, TEAM_MART, ANOMALIES)
PRUNE_EVERY = 500  # flushes between two prunings of the flush log


@dataclass(frozen=True, slots=True)
class FlushResult:
    customer_rows: int  # rows written (upserted) per mart
    team_rows: int
    dimension_rows: int
    seconds: float
    anomaly_rows: int = 0
    deleted_rows: int = 0
    refused: Sequence[Refusal] = field(default_factory=tuple)
    records_read: int = 0
    read_seconds: float = 0.0  # of `seconds`: catching up with the changelogs
    write_seconds: float = 0.0  # of `seconds`: the transaction


class MartBuilder:
    def __init__(self, settings: Settings, writer: MartWriter,
                 cancelled: CancelCheck = never) -> None:
        self.settings = settings
        self.writer = writer
        self.cancelled = cancelled  # asked between the steps of a flush (see `cancel`)
        self.rules = MartRules.from_settings(settings)
        self.anomaly_rules = AnomalyRules.from_settings(settings) if settings.anomalies \
            else None
        self.codec = codec_for(settings)
        self.aggregates = Aggregates()
        self.dimensions = Dimensions()
        self.freshness = Freshness()
        self.mirrors = {spec.table: Mirror(spec) for spec in RESTATED}
        self._dirty_customers: set[int] = set()
        self._dirty_stores: set[int] = set()
        self._dirty_owners: set[Owner] = set()  # of anomaly rows
        self._as_of: int | None = None  # the as_of ordinal the tables were last written with
        self._last_rebuild: int | None = None
        self.reflected_ms = 0  # newest sale timestamp the tables reflect (0: none yet)
        self.flushes = 0
        topics = Topics(settings.namespace)
        self.reader = ChangelogReader(settings, {
            topics.changelog(CUSTOMERS): self.aggregates.customer_record,
            topics.changelog(TEAM): self.aggregates.team_record,
            topics.changelog(COUNTS): self.freshness.record,
            topics.changelog(PRICE_FLAGS): self.aggregates.price_flag_record,
            **{topic: self._dimension_handler(name) for name, topic in topics.dims.items()},
        })

    def _dimension_handler(self, name: str):
        dimensions, codec = self.dimensions, self.codec

        def handle(_partition: int, key: bytes | None, value: bytes | None) -> None:
            if key is None:
                return
            if value is None:
                dimensions.record(name, key, None)
                return
            read = read_record(codec, name, key, value)
            if isinstance(read, Rejection):  # dead-lettered by the stream app; skipped here
                log.warning("%s record %r skipped: %s", name, key, read.message)
                return
            dimensions.record(name, key, read.record)
        return handle

    # --- flushing ----------------------------------------------------------------------------

    def flush(self, cancelled: CancelCheck | None = None) -> FlushResult:
        """Catch up, then write every mart row that changed since the last flush."""
        started = time.perf_counter()
        cancelled = cancelled or self.cancelled
        check = checker(cancelled)
        self._follow_rebuilds(check)
        log.debug("flush: the tables' state checked in %.3fs", time.perf_counter() - started)
        read = self.reader.catch_up(cancelled)
        read_seconds = time.perf_counter() - started
        check()
        newest_ms = self.freshness.newest()
        customers, stores = self.aggregates.merge()
        self._dirty_customers |= customers | self.dimensions.changed_customers
        self._dirty_stores |= stores
        if self.anomaly_rules is not None:
            self._dirty_owners.update(("c", c) for c in customers)
            self._dirty_owners.update(("s", s) for s in stores)
        for person in self.dimensions.changed_people:
            self._dirty_stores |= self.aggregates.stores_of.get(person, set())
        as_of = self._current_as_of()
        if as_of is not None and self._as_of is not None and as_of != self._as_of:
            self._dirty_customers |= self.aggregates.flips(
                self._as_of, as_of, self.rules.inactive_after_days)
        # Rows are computed and compared as the writer consumes them (see `Mirror.stream`).
        diffs = {spec.table: Diff() for spec in RESTATED}
        computed = {CUSTOMER_MART.table: self._customer_rows(as_of),
                    TEAM_MART.table: self._store_rows(),
                    ANOMALIES.table: self._anomaly_rows()}
        changes = [TableChanges(spec.table,
                                self.mirrors[spec.table].stream(computed[spec.table], diff),
                                diff.deletes, partial(self.mirrors[spec.table].released, diff),
                                spec.keep)
                   for spec, diff in zip(RESTATED, diffs.values(), strict=True)]
        dims = self.dimensions.changed_records()
        applied = self.writer.apply(changes, dims, log=True, cancelled=cancelled)
        # Committed: from here on the tables hold it.
        refused_by_table: dict[str, list[tuple]] = {}
        for r in applied.refused:
            refused_by_table.setdefault(r.table, []).append(r.key)
        flagged = self.mirrors[ANOMALIES.table].added(
            diffs[ANOMALIES.table], refused_by_table.get(ANOMALIES.table, ()))
        for table, diff in diffs.items():
            self.mirrors[table].commit(diff, refused_by_table.get(table, ()))
        self._dirty_customers.clear()
        self._dirty_stores.clear()
        self._dirty_owners.clear()
        self.dimensions.written()
        if as_of is not None:
            self._as_of = as_of
        if newest_ms:
            self.reflected_ms = newest_ms
        self.flushes += 1
        if self.flushes % PRUNE_EVERY == 0:
            self.writer.prune_log()
        result = FlushResult(
            applied.written.get(CUSTOMER_MART.table, 0), applied.written.get(TEAM_MART.table, 0),
            sum(applied.dimensions.values()), time.perf_counter() - started,
            applied.written.get(ANOMALIES.table, 0), sum(applied.deleted.values()),
            tuple(applied.refused), read, read_seconds, applied.seconds)
        self._observe(result)
        for row in flagged:
            instrumentation.ANOMALIES_FLAGGED.labels(rule=row[0]).inc()
        return result

    def _current_as_of(self) -> int | None:
        if self.rules.as_of is not None:
            return self.rules.as_of.toordinal()
        return self.aggregates.clock or None

    def _customer_rows(self, as_of: int | None) -> Iterator[tuple[int, list[Values]]]:
        aggregates, names, rules = self.aggregates, self.dimensions, self.rules
        for customer in sorted(self._dirty_customers):
            months = aggregates.customer_months(customer)
            if not months:
                yield customer, []
                continue
            assert as_of is not None  # a customer with months means a data clock
            yield customer, customer_values(customer, months, names.names_of(customer), rules,
                                            as_of)

    def _store_rows(self) -> Iterator[tuple[int, list[Values]]]:
        names = self.dimensions.person_names
        for store in sorted(self._dirty_stores):
            months = self.aggregates.stores.get(store)
            yield store, store_values(store, months, names, self.rules) if months else []

    def _anomaly_rows(self) -> Iterator[tuple[Owner, list[Values]]]:
        """The anomaly rows of every changed customer and store (`first_flagged_at`: now,
        used only by the rows that are new)."""
        rules = self.anomaly_rules
        if rules is None:
            return
        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        for owner in sorted(self._dirty_owners):
            yield owner, [row.values(now) for row in self.aggregates.anomalies(owner, rules)]

    def _everything_dirty(self) -> None:
        self._dirty_customers |= set(self.aggregates.customers)
        self._dirty_stores |= set(self.aggregates.stores)
        if self.anomaly_rules is not None:
            self._dirty_owners.update(("c", c) for c in self.aggregates.customers)
            self._dirty_owners.update(("c", c) for c in self.aggregates.flags)
            self._dirty_owners.update(("s", s) for s in self.aggregates.stores)

    def _follow_rebuilds(self, check: Callable[[], None]) -> None:
        """Load what the tables hold on the first flush, and again after a rebuild replaced
        them (then every row is recomputed and compared: the rebuild's input may differ)."""
        rebuild = self.writer.last_run("rebuild")
        rebuild_id = rebuild["id"] if rebuild else None
        loaded = all(m.loaded for m in self.mirrors.values())
        if loaded and rebuild_id == self._last_rebuild:
            return
        if loaded:  # a rebuild since the last flush
            log.info("the marts were rebuilt: comparing every row with them")
            self._everything_dirty()
            self.dimensions.all_changed()
        self.reload(check)
        self._last_rebuild = rebuild_id

    def reload(self, check: Callable[[], None] | None = None) -> None:
        """Read what the tables hold (at start, after a rebuild, on becoming the leader)."""
        check = check or checker(self.cancelled)
        quarantined = self.writer.quarantined_keys()
        for table, mirror in self.mirrors.items():
            mirror.load(_checked(self.writer.read_values(table), check),
                        quarantined.get(table, ()))


    def invalidate(self) -> None:
        """Forget what the tables hold: the next flush reads them again (leadership moved:
        another builder may have written)."""
        for mirror in self.mirrors.values():
            mirror.loaded = False
        self._everything_dirty()

    def _observe(self, result: FlushResult) -> None:
        instrumentation.FLUSH_SECONDS.observe(result.seconds)
        instrumentation.LAST_FLUSH.set(time.time())
        instrumentation.FLUSH_ROWS.labels(mart="customers").inc(result.customer_rows)
        instrumentation.FLUSH_ROWS.labels(mart="sales_team").inc(result.team_rows)
        instrumentation.FLUSH_ROWS.labels(mart="anomalies").inc(result.anomaly_rows)
        for r in result.refused:
            instrumentation.ROWS_REFUSED.labels(mart=_mart_label(r.table)).inc()
        for table, mirror in self.mirrors.items():
            label = _mart_label(table)
            instrumentation.MART_ROWS.labels(mart=label).set(mirror.size)
            instrumentation.QUARANTINED.labels(mart=label).set(len(mirror.quarantined))
        if self.reflected_ms:
            instrumentation.marts_reflect(self.reflected_ms)

    def close(self) -> None:
        self.reader.close()


def _checked(rows: Iterable[Values], check: Callable[[], None]) -> Iterator[Values]:
    for i, row in enumerate(rows):
        if not i % 10_000:
            check()
        yield row


def _mart_label(table: str) -> str:
    return {CUSTOMER_MART.table: "customers", TEAM_MART.table: "sales_team"}.get(table,
                                                                               "anomalies")
