"""`salesflow marts flush | rebuild`, and the periodic flush the stream leader runs."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from mart_builder.builder import MartBuilder
from mart_builder.db import make_engine
from mart_builder.rebuild import rebuild
from mart_builder.schema import migrate
from mart_builder.writer import MartWriter
from salesflow import instrumentation
from salesflow.errors import DependencyUnavailable, KafkaUnavailable, SalesflowError
from salesflow.kafka import wait_for_group
from salesflow.notify import Notifier
from salesflow.retry import retry
from salesflow.settings import Settings, get_settings
from salesflow.topics import Topics

marts_app = typer.Typer(no_args_is_help=True, help="The customer and sales-team data marts.")
console = Console(stderr=True)
log = logging.getLogger("salesflow.marts")


def open_writer(settings: Settings, attempts: int = 5) -> MartWriter:
    """An engine on the mart database, migrated to this release's schema."""
    engine = make_engine(settings)
    retry(lambda: migrate(engine), dependency="database", attempts=attempts)
    return MartWriter(engine)


@marts_app.command("flush")
def flush_command(
    timeout: float = typer.Option(300.0, help="Seconds to wait for the stream app."),
) -> None:
    """Make the marts reflect everything processed so far, then return."""
    settings = get_settings()
    topics = Topics(settings.namespace)
    with console.status("waiting for the stream app to process what is in the topic"):
        wait_for_group(settings, topics.app_id, topics.sales, timeout)
    builder = MartBuilder(settings, open_writer(settings))
    try:
        result = retry(builder.flush, dependency="database")
    finally:
        builder.close()
    typer.echo(f"flushed: {result.customer_rows} customer rows, {result.team_rows} team rows "
               f"written in {result.seconds:.2f}s")


@marts_app.command("rebuild")
def rebuild_command() -> None:
    """Recompute both marts from the full history of valid sales; swap them in atomically."""
    settings = get_settings()
    writer = open_writer(settings)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                  TextColumn("{task.completed:,} sales read"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("rebuilding from the valid-sales history")
        result = rebuild(settings, writer, on_progress=lambda n: progress.advance(task, n))
    typer.echo(f"rebuilt: {result.customer_rows} customer rows, {result.team_rows} team rows "
               f"in {result.seconds:.2f}s")


class PeriodicFlusher:
    """What the stream app's leader runs every `SALESFLOW_FLUSH_INTERVAL_SECONDS`.

    A failed flush is one clear log line and a metric; its work stays dirty and the next
    interval retries it, while the stream keeps consuming.
    """

    NOTIFY_AFTER_FAILURES = 3

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.builder: MartBuilder | None = None
        self.failures = 0
        self.notifier = Notifier.from_settings(settings)

    def run_once(self) -> None:
        try:
            if self.builder is None:  # the next interval is the retry
                self.builder = MartBuilder(self.settings, open_writer(self.settings, 1))
            result = self.builder.flush()
            self.failures = 0
            if result.customer_rows or result.team_rows:
                log.info("mart flush: %d customer rows, %d team rows in %.2fs",
                         result.customer_rows, result.team_rows, result.seconds)
        except SalesflowError as exc:
            instrumentation.FLUSH_FAILURES.labels(kind=type(exc).__name__).inc()
            log.error("mart flush failed, will retry in %.0fs: %s",
                      self.settings.flush_interval_seconds, exc)
            if isinstance(exc, DependencyUnavailable):
                self._dependency_failed(exc)
        except Exception as exc:
            instrumentation.FLUSH_FAILURES.labels(kind=type(exc).__name__).inc()
            log.exception("mart flush failed unexpectedly")

    def _dependency_failed(self, exc: DependencyUnavailable) -> None:
        """A transient failure of Kafka or the database: a retry; a person is told once
        it has failed NOTIFY_AFTER_FAILURES times in a row."""
        dependency = "kafka" if isinstance(exc, KafkaUnavailable) else "database"
        self.failures += 1
        instrumentation.RETRIES.labels(dependency=dependency).inc()
        if self.failures == self.NOTIFY_AFTER_FAILURES:
            instrumentation.FAILURES.labels(dependency=dependency).inc()
            what = "Kafka" if dependency == "kafka" else "mart database"
            self.notifier.dependency_down(what, exc, attempts=self.failures)
