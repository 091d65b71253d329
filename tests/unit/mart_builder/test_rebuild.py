"""The rebuild's fold: the vectorised passes equal the plain ones, and exact beyond int64."""

from __future__ import annotations

import random

import numpy as np

from mart_builder.rebuild import (
    Fold,
    crowded_days,
    crowded_days_vectorised,
    fold,
    fold_vectorised,
)
from salesflow.anomalies import AnomalyRules
from salesflow.codec import Codec
from salesflow.sale import MAX_ID


def random_facts(n: int, seed: int = 7) -> list[tuple[int, int, int, int, int]]:
    rng = random.Random(seed)
    return [(rng.choice((1, 2, 99, MAX_ID)), rng.choice((121, MAX_ID)), rng.randint(1, 13),
             rng.randrange(-400, 25_000), rng.randint(0, 9_999_999_999)) for _ in range(n)]


def test_the_vectorised_fold_equals_the_plain_one() -> None:
    facts = random_facts(20_000)
    assert fold_vectorised(np.array(facts, dtype=np.int64)) == fold(facts)
    assert fold_vectorised(np.empty((0, 5), dtype=np.int64)) == ({}, {})


def test_sums_beyond_int64_are_exact() -> None:
    top = 2**62  # one sale this large would overflow any int64 sum of two
    facts = [(1, 121, 1, 20_000, top), (1, 121, 1, 20_001, top), (2, 121, 2, 20_000, 5)]
    history = Fold(Codec())
    history.add(facts)
    customers, team, crowded = history.aggregate()
    assert crowded == {}  # no anomaly rules given
    assert customers[1][0][:3] == ("2024-10", 2**63, 2)
    assert team[121][(1, "2024-10")][:2] == (2**63, 2)
    assert (customers, team) == fold(facts)


def test_a_value_beyond_int64_falls_back_to_exact_python() -> None:
    facts = [(1, 121, 1, 20_000, 2**64), (1, 121, 1, 20_001, 3), *random_facts(50)]
    history = Fold(Codec(), anomalies=AnomalyRules())
    history.add(facts)
    assert history.aggregate() == (*fold(facts), crowded_days(facts, 3))


def test_the_vectorised_crowded_days_equal_the_plain_ones() -> None:
    rng = random.Random(3)  # few customers, days and stores: many crowded days
    facts = [(rng.randint(1, 20), rng.randint(1, 6), 1, rng.randrange(-3, 30), 100)
             for _ in range(3_000)]
    for at_least in (2, 3, 5):
        expected = crowded_days(facts, at_least)
        assert expected  # the case is exercised
        assert crowded_days_vectorised(np.array(facts, dtype=np.int64), at_least) == expected
    one_store = [(1, 121, 1, 20_000, 5), (1, 121, 2, 20_000, 7), (1, 122, 1, 20_001, 5)]
    assert crowded_days(one_store, 2) == {}  # the same store twice is one store
    assert crowded_days_vectorised(np.array(one_store, dtype=np.int64), 2) == {}
