"""`salesflow stream`: run one worker of the stream app."""

from __future__ import annotations

import logging
from pathlib import Path

import typer


def stream_command(
    loglevel: str = typer.Option("info", help="Worker log level."),
) -> None:
    """Run a stream app worker; several may run at once and share the partitions."""
    from prometheus_client import start_http_server

    from salesflow.kafka import check_reachable, ensure_topics, topic_id
    from salesflow.settings import get_settings
    from salesflow.topics import Topics

    settings = get_settings()
    check_reachable(settings)
    seen_changelog = Topics(settings.namespace).changelog("seen")
    ensure_topics(settings)
    ensure_topics(settings, [seen_changelog])  # before Faust does: its id marks local state
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="0.0.0.0")
    from faust import Worker

    from salesflow import instrumentation
    from salesflow.notify import CrashLoopDetector
    from stream_app import state_dir
    from stream_app.app import app, dimensions, notifier, watch_recovery

    state_dir.bind(Path(app.conf.datadir), topic_id(settings, seen_changelog))

    # Per worker (its state slot), so several workers started on one machine are no loop.
    starts = CrashLoopDetector(Path(app.conf.datadir) / "worker-starts")
    count = starts.record_start()
    if starts.looping(count):
        notifier.worker_crash_loop(count, starts.window)
    dimensions.start()
    watch_recovery()
    instrumentation.WORKER_UP.set(1)
    logging.getLogger("salesflow").setLevel(logging.INFO)
    worker = Worker(app, loglevel=loglevel, quiet=True, override_logging=True)
    worker.execute_from_commandline()
