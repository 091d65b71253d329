"""`salesflow produce generate`: seeded synthetic dimensions and sales, like the seed's generator.

Stores 121–124 with their salespersons, the seed's products and prices, customers with names,
addresses and phones. The same seed gives byte-identical files. `bad_fraction` mixes in rows
that break each rule of the data contract, so every reason code shows up downstream.
"""

from __future__ import annotations

import csv
import random
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

PRODUCTS = {  # the seed's products and prices
    "quaker oats": "212.00", "sugar": "50.00", "maida": "20.00", "besan": "52.00",
    "refined oil": "110.00", "clinic plus": "1.50", "dantkanti": "100.00", "nutrella": "40.00",
}
STORES = {  # store id -> its salespersons
    121: (1, 2, 3), 122: (4, 5, 6), 123: (7, 8, 9), 124: (10, 11, 12, 13),
}
STORE_ROWS = [
    (121, "Delhi", "122009", "Vyom", "2022-01-15", "Great store with a friendly staff."),
    (122, "Delhi", "110011", "Suresh", "2021-08-10", "Excellent selection, of products."),
    (123, "Delhi", "201301", "Vishal", "2023-01-20", "Clean and organized store."),
    (124, "Delhi", "400001", "Rakesh", "2020-05-05", "Good prices and helpful staff."),
]
FIRST = ("Aarav", "Indranil", "Vardaniya", "Shamik", "Yasmin", "Divij", "Rhea", "Dhanush",
         "Yuvaan", "Sumer", "Zara", "Ishita", "Kabir", "Meera", "Anaya", "Vihaan")
LAST = ("Jani", "Shan", "Tandon", "Kashyap", "Lala", "Dugar", "Dutta", "Doctor", "Tank",
        "Krishna", "Mehta", "Bose", "Iyer", "Rao", "Sen", "Verma")
CITIES = (("Delhi", "110011"), ("Gurugram", "122009"), ("Noida", "201301"),
          ("Mumbai", "400001"))
TEAM = ("Rahul Verma", "Priya Singh", "Amit Sharma", "Sneha Gupta", "Neha Kumar",
        "Vijay Yadav", "Anita Malhotra", "Alok Rajput", "Monica Jain", "Rajesh Gupta",
        "Kunal Sen", "Shreya Das", "Arun Nair")
SALES_HEADER = ["sale_id", "customer_id", "store_id", "product_name", "sales_date",
                "sales_person_id", "price", "quantity", "total_cost"]
BAD_KINDS = ("missing_field", "unparseable", "non_positive_quantity", "non_positive_price",
             "total_mismatch", "date_out_of_range", "unknown_customer", "unknown_store",
             "unknown_sales_person", "unknown_product", "conflicting_duplicate", "duplicate")


@dataclass(frozen=True)
class GenerateSpec:
    rows: int = 10_000
    customers: int = 500
    seed: int = 42
    start: date = date(2024, 1, 1)
    end: date = date(2025, 12, 31)
    bad_fraction: float = 0.0
    anomalies: int = 0  # planted cases of each anomaly rule (see `planted_rows`)

    @property
    def spike_customers(self) -> range:
        """Customers of their own, added for the planted customer spending spikes."""
        return range(self.customers + 1, self.customers + 1 + self.anomalies)

    @property
    def spike_people(self) -> range:
        """Salespersons of their own (store 121), added for the planted sales spikes."""
        return range(len(TEAM) + 1, len(TEAM) + 1 + self.anomalies)


def write_dimensions(out: Path, spec: GenerateSpec) -> None:
    rng = random.Random(spec.seed)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "customer.csv",
           ["customer_id", "first_name", "last_name", "address", "pincode", "phone_number",
            "customer_joining_date"],
           ([i, rng.choice(FIRST), rng.choice(LAST), *rng.choice(CITIES),
             f"9{rng.randrange(10**9):09d}", _day(rng, date(2019, 1, 1), spec.start)]
            for i in range(1, spec.spike_customers.stop)))
    _write(out / "store.csv",
           ["id", "address", "store_pincode", "store_manager_name", "store_opening_date",
            "reviews"], STORE_ROWS)
    _write(out / "product.csv",
           ["id", "name", "current_price", "old_price", "created_date", "updated_date",
            "expiry_date"],
           ([i, name, price, price, "2022-05-15", "", "2027-01-01"]
            for i, (name, price) in enumerate(PRODUCTS.items(), 1)))
    _write(out / "sales_team.csv",
           ["id", "first_name", "last_name", "manager_id", "is_manager", "address", "pincode",
            "joining_date"],
           [*([i, *name.split(" "), 10, "Y" if i == 10 else "N", "Delhi", "122007",
               "2020-05-01"] for i, name in enumerate(TEAM, 1)),
            *([i, "Spike", f"Seller{i}", 10, "N", "Delhi", "122007", "2020-05-01"]
              for i in spec.spike_people)])


def sale_rows(spec: GenerateSpec):
    """Yield sales CSV rows (lists of text), good and, at `bad_fraction`, bad ones."""
    rng = random.Random(spec.seed + 1)
    products = list(PRODUCTS.items())
    stores = list(STORES.items())
    span = (spec.end - spec.start).days + 1
    start_ordinal = spec.start.toordinal()
    recent: list[list[str]] = []
    for _ in range(spec.rows):
        store, people = stores[rng.randrange(len(stores))]
        name, price = products[rng.randrange(len(products))]
        quantity = rng.randint(1, 10)
        price_cents = int(price.replace(".", ""))
        row = [str(uuid.UUID(int=rng.getrandbits(128), version=4)),
               str(rng.randint(1, spec.customers)), str(store), name,
               date.fromordinal(start_ordinal + rng.randrange(span)).isoformat(),
               str(people[rng.randrange(len(people))]), price, str(quantity),
               _cents(price_cents * quantity)]
        if spec.bad_fraction and rng.random() < spec.bad_fraction:
            row = _spoil(rng, row, recent)
        elif len(recent) < 1000:
            recent.append(row)
        yield row
    if spec.anomalies:
        yield from planted_rows(spec, rng)


def planted_rows(spec: GenerateSpec, rng: random.Random):
    """`spec.anomalies` cases of each anomaly rule (docs/spec/anomalies.md), as valid sales:
    - price_off_list: sales at 1.5 × their product's price;
    - multi_store_day: customers 1..n buying in stores 121, 122 and 123 on one day;
    - customer_spend_spike: customers of their own with 50.00 in each of three months and
      2,120.00 in the fourth;
    - salesperson_spike: salespersons of their own (store 121) likewise.
    The first four months from `spec.start` hold them; tests compute what must be flagged
    from the files with the same rules, so random sales that happen to qualify count too."""
    months = [_month_start(spec.start, i) for i in range(4)]
    people = dict(STORES)

    def row(customer: int, store: int, day: date, person: int, product: str,
            price_cents: int, quantity: int) -> list[str]:
        return [str(uuid.UUID(int=rng.getrandbits(128), version=4)), str(customer),
                str(store), product, day.isoformat(), str(person), _cents(price_cents),
                str(quantity), _cents(price_cents * quantity)]

    for n in range(spec.anomalies):
        name, price = rng.choice(list(PRODUCTS.items()))
        yield row(rng.randint(1, spec.customers), 122, months[1] + timedelta(days=n), 4, name,
                  int(price.replace(".", "")) * 3 // 2, 2)
        day = months[2] + timedelta(days=n)
        for store in (121, 122, 123):
            yield row(n + 1, store, day, people[store][0], "sugar", 5000, 1)
        for i, first in enumerate(months):
            big = i == len(months) - 1
            yield row(spec.spike_customers[n], 124, first + timedelta(days=n), 10,
                      "quaker oats" if big else "sugar", 21200 if big else 5000,
                      10 if big else 1)
            yield row(rng.randint(1, spec.customers), 121, first + timedelta(days=n),
                      spec.spike_people[n], "quaker oats" if big else "sugar",
                      21200 if big else 5000, 10 if big else 1)


def _month_start(start: date, months: int) -> date:
    index = start.year * 12 + start.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _spoil(rng: random.Random, row: list[str], recent: list[list[str]]) -> list[str]:
    """Break one rule of the data contract (chosen at random) in a copy of `row`."""
    kind = rng.choice(BAD_KINDS)
    bad = list(row)
    if kind in ("conflicting_duplicate", "duplicate") and recent:
        bad = list(rng.choice(recent))
        if kind == "conflicting_duplicate":
            q = int(bad[7]) + 1
            bad[7], bad[8] = str(q), _cents(int(bad[6].replace(".", "")) * q)
    elif kind == "missing_field":
        bad[rng.randrange(1, 9)] = ""
    elif kind == "unparseable":
        bad[rng.choice((4, 6))] = rng.choice(("abc", "2025-13-45"))
    elif kind == "non_positive_quantity":
        bad[7] = rng.choice(("0", "-2"))
    elif kind == "non_positive_price":
        bad[6], bad[8] = "0.00", "0.00"
    elif kind == "total_mismatch":
        bad[8] = _cents(int(bad[8].replace(".", "")) + 500)
    elif kind == "date_out_of_range":
        bad[4] = rng.choice(("1999-12-31", "2031-01-01"))
    elif kind == "unknown_customer":
        bad[1] = "99999999"
    elif kind == "unknown_store":
        bad[2] = "999"
    elif kind == "unknown_sales_person":
        bad[5] = "77"
    elif kind == "unknown_product":
        bad[3] = "caviar"
    return bad


def write_sales(path: Path, spec: GenerateSpec) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write(path, SALES_HEADER, sale_rows(spec))


def generate(out: Path, spec: GenerateSpec) -> Path:
    """Write the four dimension files and `sales.csv` into `out`; returns the sales file."""
    write_dimensions(out, spec)
    sales = out / "sales.csv"
    write_sales(sales, spec)
    return sales


def _write(path: Path, header: list[str], rows) -> int:
    n = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for row in rows:
            w.writerow(row)
            n += 1
    return n


def _cents(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _day(rng: random.Random, lo: date, hi: date) -> str:
    return (lo + timedelta(days=rng.randrange(max(1, (hi - lo).days)))).isoformat()
