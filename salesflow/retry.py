"""Bounded retries of transient I/O, with exponential backoff and full jitter."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from salesflow import instrumentation
from salesflow.errors import DatabaseUnavailable, DependencyUnavailable, KafkaUnavailable

T = TypeVar("T")
log = logging.getLogger("salesflow.retry")


def retry(fn: Callable[[], T], *, dependency: str, attempts: int = 5, base: float = 0.5,
          cap: float = 10.0, sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `fn`; on `DependencyUnavailable` wait and try again, at most `attempts` times.

    Anything else (a bug, a rejected write) is raised at once: retrying cannot help it.
    Kafka's and the database's failures are counted and logged as theirs whatever
    `dependency` says (a flush reads Kafka, then writes the database).
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except DependencyUnavailable as exc:
            dependency = dependency_of(exc, dependency)
            if attempt == attempts:
                instrumentation.FAILURES.labels(dependency=dependency).inc()
                raise
            delay = random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
            instrumentation.RETRIES.labels(dependency=dependency).inc()
            log.warning("%s unavailable (%s); retry %d/%d in %.1fs", dependency, exc, attempt,
                        attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def dependency_of(exc: DependencyUnavailable, default: str) -> str:
    """The metric label of the dependency that failed."""
    if isinstance(exc, KafkaUnavailable):
        return "kafka"
    if isinstance(exc, DatabaseUnavailable):
        return "database"
    return default
