"""Progress bars of the long commands (produce, generate, rebuild): count, rate, time left.

On a terminal the bar updates in place and its last state stays on screen; elsewhere (a log,
CI) only the final line is printed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def sales_progress(console: Console, description: str, total: int | None,
                   unit: str = "sales") -> Iterator[Callable[[int], None]]:
    """A bar for `total` items (a spinner when unknown); yields `advance(n)`."""
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn() if total else TextColumn("{task.completed:,}"),
               TextColumn(f"{unit}"),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]
    if total:
        columns += [TextColumn("left"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, rate="")

        def show_rate(final: bool = False) -> None:
            state = progress.tasks[0]
            speed = None if final else state.speed  # recent, else the average so far
            if not speed and state.elapsed:
                speed = state.completed / state.elapsed
            if speed:
                progress.update(task, rate=f"{speed:,.0f}/s")

        def advance(n: int) -> None:
            progress.advance(task, n)
            show_rate()

        try:
            yield advance
        except BaseException:
            progress.update(task, visible=False)  # a failed command ends with its error only
            raise
        show_rate(final=True)
