"""The leader's periodic flush: how a failed flush is counted (the alerts read these)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from mart_builder.follow import PeriodicFlusher
from salesflow.errors import DatabaseRejected, DatabaseUnavailable, KafkaUnavailable
from salesflow.settings import Settings


class FailingBuilder:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def flush(self) -> None:
        raise self.exc


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def flusher_failing_with(exc: Exception) -> PeriodicFlusher:
    flusher = PeriodicFlusher(Settings(_env_file=None))  # type: ignore[call-arg]
    flusher.builder = FailingBuilder(exc)  # type: ignore[assignment]
    return flusher


def test_every_failed_flush_is_counted_by_kind_even_an_unexpected_one():
    before = sample("salesflow_mart_flush_failures_total", kind="ZeroDivisionError")
    flusher_failing_with(ZeroDivisionError("bug")).run_once()
    assert sample("salesflow_mart_flush_failures_total", kind="ZeroDivisionError") == before + 1


def test_an_unavailable_dependency_is_retried_under_its_own_name():
    before = {d: (sample("salesflow_dependency_retries_total", dependency=d),
                  sample("salesflow_dependency_failures_total", dependency=d))
              for d in ("kafka", "database")}
    kafka = flusher_failing_with(KafkaUnavailable("no broker"))
    for _ in range(PeriodicFlusher.NOTIFY_AFTER_FAILURES):
        kafka.run_once()
    flusher_failing_with(DatabaseUnavailable("refused")).run_once()
    assert sample("salesflow_dependency_retries_total", dependency="kafka") == \
        before["kafka"][0] + PeriodicFlusher.NOTIFY_AFTER_FAILURES
    assert sample("salesflow_dependency_failures_total", dependency="kafka") == \
        before["kafka"][1] + 1
    assert sample("salesflow_dependency_retries_total", dependency="database") == \
        before["database"][0] + 1


def test_a_rejected_statement_is_no_dependency_outage():
    before = sample("salesflow_dependency_retries_total", dependency="database")
    flusher = flusher_failing_with(DatabaseRejected("bad column"))
    flusher.run_once()
    assert flusher.failures == 0
    assert sample("salesflow_dependency_retries_total", dependency="database") == before


class RecordingFlusher:
    """Stands in for the flusher: records when each flush started and the lag it was given."""

    def __init__(self, first_takes: float) -> None:
        self.first_takes = first_takes
        self.builder = None
        self.starts: list[tuple[float, float]] = []

    def run_once(self) -> None:
        import time

        self.starts.append((time.monotonic(),
                            sample("salesflow_mart_flush_lag_seconds")))
        if len(self.starts) == 1:
            time.sleep(self.first_takes)


def test_an_overrun_is_not_queued_up_and_the_lag_shows_it():
    import threading
    import time

    from mart_builder.follow import Follower

    follower = Follower(Settings(_env_file=None, flush_interval_seconds=0.3))  # type: ignore[call-arg]
    follower.flusher = RecordingFlusher(first_takes=1.0)  # type: ignore[assignment]
    follower.leading.set()
    loop = threading.Thread(target=follower._flush_loop)
    loop.start()
    time.sleep(2.0)
    follower.stop()
    loop.join(5)
    starts = follower.flusher.starts
    (first, lag_first), (second, lag_second), (third, lag_third) = starts[:3]
    assert lag_first == 0.0
    # the overrunning flush is followed by ONE flush at once (from the newest state), late by
    # the overrun, and then the interval resumes: the missed intervals are not made up
    assert second - first >= 1.0 and lag_second >= 0.6
    assert third - second >= 0.25 and lag_third < lag_second
    assert len(starts) <= 2 + (2.0 - 1.0) / 0.3 + 1
