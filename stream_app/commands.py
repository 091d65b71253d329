"""`salesflow stream`: run one worker of the stream app until SIGTERM."""

from __future__ import annotations

import gc
import logging
import signal
import sys

import typer

log = logging.getLogger("salesflow.stream")


def stream_command(
    loglevel: str = typer.Option("info", help="Worker log level (debug, info, warning)."),
) -> None:
    """Run a stream app worker; several may run at once and share the partitions."""
    from prometheus_client import start_http_server

    from salesflow.errors import SalesflowError
    from salesflow.settings import get_settings
    from stream_app.worker import EXIT_RECOVERY_TIMEOUT, EXIT_UNEXPECTED, RecoveryTimeout, Worker

    settings = get_settings()
    logging.getLogger("salesflow").setLevel(loglevel.upper())
    # The worker makes a few objects per sale and keeps few of them; the collector's default
    # (a young-generation pass per 700 new objects, full passes over every live object)
    # measured 10-30 % of its time. Freeze what start-up made, and collect far less often.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    worker = Worker(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_bind)
    try:
        worker.run()
    except RecoveryTimeout as exc:
        log.error("%s; exiting (a supervisor restarts the worker; nothing was committed)", exc)
        sys.exit(EXIT_RECOVERY_TIMEOUT)
    except SalesflowError:
        raise  # one line from the CLI
    except Exception:
        log.exception("unexpected error; exiting without committing")
        sys.exit(EXIT_UNEXPECTED)
