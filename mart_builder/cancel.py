"""Stopping a flush between two steps (the process is shutting down, or lost leadership)."""

from __future__ import annotations

from collections.abc import Callable

CancelCheck = Callable[[], bool]


class Cancelled(Exception):
    """The flush stopped between two steps; nothing of it was committed."""


def never() -> bool:
    return False


def checker(cancelled: CancelCheck | None) -> Callable[[], None]:
    """A function that raises `Cancelled` once `cancelled()` says so."""
    def check() -> None:
        if cancelled is not None and cancelled():
            raise Cancelled("the flush was cancelled")
    return check
