"""The dimension records the marts join with (the aggregates are `salesflow.tables`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: int
    first_name: str
    last_name: str
    address: str
    pincode: str
    phone_number: str

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Customer:
        return cls(r["customer_id"], r["first_name"], r["last_name"], r["address"],
                   r["pincode"], r["phone_number"])


@dataclass(frozen=True, slots=True)
class SalesPerson:
    sales_person_id: int
    first_name: str
    last_name: str

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> SalesPerson:
        return cls(r["id"], r["first_name"], r["last_name"])
