"""The mart builder's picture of the stream app's state, kept current from its changelogs.

Pure (no Kafka, no SQL): the changelog reader hands every record to `Aggregates` or
`Dimensions`; a flush asks which customers and stores changed since the last committed flush
and reads their merged months.

The stream app keeps a partial aggregate per sales partition for each key (`salesflow.tables`);
the builder keeps the latest raw value of each partial and merges the partials of a key only
when a flush needs it, once per changed key: a new sale costs a struct unpack and a few
integer operations, not an object per record.
"""

from __future__ import annotations

import struct
from datetime import date
from typing import Any

from mart_builder.anomalies import AnomalyRow, Owner, customer_anomalies, store_anomalies
from mart_builder.metrics import (
    NO_CUSTOMER,
    CustomerNames,
    MonthValues,
    TeamValues,
    customer_names,
    person_name,
)
from mart_builder.model import Customer, SalesPerson
from salesflow.anomalies import AnomalyRules
from salesflow.dimensions import key_id
from salesflow.tables import (
    PartitionCounts,
    PriceFlag,
    could_hold_stores,
    customer_key,
    stores_by_day,
)

_CUSTOMER = struct.Struct("<qqqii")  # salesflow.tables: total, count, max, first, last, (stores)
_TEAM = struct.Struct("<qqq")  # total, count, max
_MONTHS: dict[bytes, str] = {}  # interned month strings: every key of a month shares one


def _month(raw: bytes) -> str:
    month = _MONTHS.get(raw)
    if month is None:
        month = _MONTHS[raw] = raw.decode()
    return month


class Aggregates:
    """The partial aggregates of the `customers` and `team` changelogs, merged per key."""

    def __init__(self) -> None:
        self._customer_parts: dict[bytes, dict[int, bytes]] = {}
        self._team_parts: dict[bytes, dict[int, bytes]] = {}
        self._customer_keys: set[bytes] = set()  # keys changed since the last merge
        self._team_keys: set[bytes] = set()
        # merged: customer -> month -> MonthValues; store -> (person, month) -> TeamValues
        self.customers: dict[int, dict[str, MonthValues]] = {}
        self.stores: dict[int, dict[tuple[int, str], TeamValues]] = {}
        self.last_day: dict[int, int] = {}  # customer -> ordinal of its latest sale
        self.stores_of: dict[int, set[int]] = {}  # salesperson -> stores they sell in
        self.clock = 0  # the data's clock: ordinal of the latest sale of all
        # price flags (`price_flags` changelog): customer -> sale id -> flag
        self.flags: dict[int, dict[bytes, PriceFlag]] = {}
        self._flagged_by: dict[bytes, int] = {}  # sale id -> its customer
        self._flags_changed: set[int] = set()  # customers, since the last merge

    # --- changelog records ---------------------------------------------------------------

    def customer_record(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        if value is not None and key:  # the common case, inline: called per record
            parts = self._customer_parts.get(key)
            if parts is None:
                self._customer_parts[key] = {partition: value}
            else:
                parts[partition] = value
            self._customer_keys.add(key)
        else:
            _forget(self._customer_parts, self._customer_keys, partition, key)

    def team_record(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        if value is not None and key:
            parts = self._team_parts.get(key)
            if parts is None:
                self._team_parts[key] = {partition: value}
            else:
                parts[partition] = value
            self._team_keys.add(key)
        else:
            _forget(self._team_parts, self._team_keys, partition, key)

    def price_flag_record(self, _partition: int, key: bytes | None, value: bytes | None
                          ) -> None:
        if not key:
            return
        customer = self._flagged_by.pop(key, None)
        if customer is not None:  # replaced or deleted
            own = self.flags[customer]
            del own[key]
            if not own:
                del self.flags[customer]
            self._flags_changed.add(customer)
        if value is not None:
            flag = PriceFlag.decode(key, value)
            self.flags.setdefault(flag.customer_id, {})[key] = flag
            self._flagged_by[key] = flag.customer_id
            self._flags_changed.add(flag.customer_id)

    # --- merging ---------------------------------------------------------------------------

    def merge(self) -> tuple[set[int], set[int]]:
        """Fold the changed keys into the merged months; (changed customers, changed
        stores). A customer whose price flags changed counts as changed."""
        customers = self._merge_customers() | self._flags_changed
        self._flags_changed = set()
        return customers, self._merge_team()

    def _merge_customers(self) -> set[int]:
        changed: set[int] = set()
        parts_of, unpack, customers = self._customer_parts, _CUSTOMER.unpack_from, self.customers
        for key in self._customer_keys:
            raw_id, raw_month = key.split(b"|")
            customer = int(raw_id)
            month = _MONTHS.get(raw_month) or _month(raw_month)
            parts = parts_of.get(key)
            merged = None
            if parts:
                for value in parts.values():
                    total, count, top, first, last = unpack(value)
                    if not count:
                        continue
                    if merged is None:
                        merged = (month, total, count, top, first, last)
                    else:
                        _, t, n, m, f, la = merged
                        merged = (month, t + total, n + count, top if top > m else m,
                                  first if first < f else f, last if last > la else la)
            months = customers.get(customer)
            if merged is None:
                if months is None or months.pop(month, None) is None:
                    continue
                if not months:
                    del customers[customer]
            elif months is None:
                customers[customer] = {month: merged}
            else:
                months[month] = merged
            changed.add(customer)
        self._customer_keys.clear()
        lowered = False
        last_day, clock = self.last_day, self.clock
        for customer in changed:
            months = customers.get(customer)
            before = last_day.get(customer, 0)
            last = max([m[5] for m in months.values()]) if months else 0
            if last:
                last_day[customer] = last
            else:
                last_day.pop(customer, None)
            if last > clock:
                clock = last
            elif last < before == clock:
                lowered = True
        # the latest sale went away (a deleted key): find the clock again
        self.clock = max(last_day.values(), default=0) if lowered else clock
        return changed

    def _merge_team(self) -> set[int]:
        changed: set[int] = set()
        parts_of, unpack = self._team_parts, _TEAM.unpack
        for key in self._team_keys:
            raw_store, raw_person, raw_month = key.split(b"|")
            store, person = int(raw_store), int(raw_person)
            month = _MONTHS.get(raw_month) or _month(raw_month)
            merged = None
            for value in parts_of.get(key, {}).values():
                total, count, top = unpack(value)
                if not count:
                    continue
                if merged is None:
                    merged = (total, count, top)
                else:
                    merged = (merged[0] + total, merged[1] + count,
                              top if top > merged[2] else merged[2])
            months = self.stores.get(store)
            if merged is None:
                if months is None or months.pop((person, month), None) is None:
                    continue
                if not months:
                    del self.stores[store]
            else:
                if months is None:
                    months = self.stores[store] = {}
                months[(person, month)] = merged
                self.stores_of.setdefault(person, set()).add(store)
            changed.add(store)
        self._team_keys.clear()
        return changed

    # --- reading ---------------------------------------------------------------------------

    def customer_months(self, customer: int) -> list[MonthValues]:
        """All months of a customer, sorted (empty: the customer has no sales)."""
        months = self.customers.get(customer)
        return sorted(months.values()) if months else []

    def stores_on(self, customer: int, at_least: int) -> dict[date, int]:
        """The days on which a customer bought in `at_least` distinct stores (merged over
        partitions), with how many."""
        out: dict[date, int] = {}
        for month in self.customers.get(customer, ()):
            parts = list(self._customer_parts.get(customer_key(customer, month), {}).values())
            if len(parts) == 1 and not could_hold_stores(parts[0], at_least):
                continue  # the common case: one partial, too short for a crowded day
            days: dict[int, set[int]] = {}
            for value in parts:
                for day, stores in stores_by_day(value).items():
                    days.setdefault(day, set()).update(stores)
            year, mon = int(month[:4]), int(month[5:7])
            out.update((date(year, mon, day), len(stores)) for day, stores in days.items()
                       if len(stores) >= at_least)
        return out

    def anomalies(self, owner: Owner, rules: AnomalyRules) -> list[AnomalyRow]:
        """The anomaly rows of one customer ("c", id) or store ("s", id), as they stand."""
        kind, owner_id = owner
        if kind == "c":
            return customer_anomalies(owner_id, self.customer_months(owner_id),
                                      self.stores_on(owner_id, rules.multi_store_min_stores),
                                      self.flags.get(owner_id, {}).values(), rules)
        return store_anomalies(owner_id, self.stores.get(owner_id, {}), rules)

    def flips(self, before: int, after: int, inactive_after_days: int) -> set[int]:
        """Customers whose inactive_status differs between the as_of dates `before` and
        `after` (ordinals): inactive means `as_of - last > days`, so exactly those whose last
        sale lies in [min - days, max - days)."""
        low, high = sorted((before, after))
        low, high = low - inactive_after_days, high - inactive_after_days
        return {c for c, last in self.last_day.items() if low <= last < high}


def _forget(parts: dict[bytes, dict[int, bytes]], changed: set[bytes], partition: int,
            key: bytes | None) -> None:
    """A tombstone: one partition's partial of a key is gone."""
    if not key:
        return
    held = parts.get(key)
    if held is None or held.pop(partition, None) is None:
        return
    if not held:
        del parts[key]
    changed.add(key)


class Freshness:
    """The newest input message timestamp the stream app applied, per sales partition (the
    `counts` changelog): after a flush, how fresh the marts are."""

    def __init__(self) -> None:
        self._raw: dict[int, bytes] = {}
        self.newest_ms: dict[int, int] = {}

    def record(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        if key == b"totals" and value:
            self._raw[partition] = value

    def newest(self) -> int:
        """The newest sale timestamp (ms) over every partition read so far; 0 when none."""
        for partition, value in self._raw.items():
            self.newest_ms[partition] = PartitionCounts.decode(value).newest_ms
        self._raw.clear()
        return max(self.newest_ms.values(), default=0)


class Dimensions:
    """The latest record of every dimension key; what changed since the last flush."""

    def __init__(self) -> None:
        self.records: dict[str, dict[bytes, dict[str, Any]]] = {}
        self.changed: dict[str, set[bytes]] = {}
        self.customer_names: dict[int, CustomerNames] = {}
        self.person_names: dict[int, str | None] = {}
        self.changed_customers: set[int] = set()
        self.changed_people: set[int] = set()

    def record(self, name: str, key: bytes, record: dict[str, Any] | None) -> None:
        """The latest record of a key; None: the key was deleted (its rows' names become
        NULL, as in a rebuild, which never sees the record)."""
        records = self.records.setdefault(name, {})
        if record is None:
            if records.pop(key, None) is None:
                return
            self.changed.setdefault(name, set()).discard(key)
            gone = key_id(key)
            if name == "customer" and self.customer_names.pop(gone, None) is not None:
                self.changed_customers.add(gone)  # type: ignore[arg-type]
            elif name == "sales_team" and self.person_names.pop(gone, None) is not None:
                self.changed_people.add(gone)  # type: ignore[arg-type]
            return
        records[key] = record
        self.changed.setdefault(name, set()).add(key)
        if name == "customer":
            c = Customer.from_record(record)
            names = customer_names(c)
            if self.customer_names.get(c.customer_id) != names:
                self.customer_names[c.customer_id] = names
                self.changed_customers.add(c.customer_id)
        elif name == "sales_team":
            p = SalesPerson.from_record(record)
            full = person_name(p)
            if self.person_names.get(p.sales_person_id) != full:
                self.person_names[p.sales_person_id] = full
                self.changed_people.add(p.sales_person_id)

    def names_of(self, customer: int) -> CustomerNames:
        return self.customer_names.get(customer, NO_CUSTOMER)

    def changed_records(self) -> dict[str, list[dict[str, Any]]]:
        """The records to write to the dimension tables (every changed key's latest)."""
        return {name: [self.records[name][k] for k in keys if k in self.records.get(name, {})]
                for name, keys in self.changed.items() if keys}

    def written(self) -> None:
        self.changed.clear()
        self.changed_customers.clear()
        self.changed_people.clear()

    def all_changed(self) -> None:
        """Everything counts as changed (the tables were replaced under us)."""
        for name, records in self.records.items():
            self.changed.setdefault(name, set()).update(records)

