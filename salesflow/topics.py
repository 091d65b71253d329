"""The only place that knows topic names: all derive from the namespace setting."""

from __future__ import annotations

from dataclasses import dataclass

DIMENSIONS = ("customer", "store", "product", "sales_team")


@dataclass(frozen=True)
class Topics:
    namespace: str

    @property
    def sales(self) -> str:
        """Sale records from producers and upstream systems, keyed by `sale_id`."""
        return f"{self.namespace}.sales"

    @property
    def dlq(self) -> str:
        """Every rejected record, with its reason in the headers."""
        return f"{self.namespace}.sales.dlq"

    @property
    def valid_sales(self) -> str:
        """Accepted sales keyed by `sale_id`, compacted: the history a rebuild reads."""
        return f"{self.namespace}.sales.valid"

    def dim(self, name: str) -> str:
        """A compacted dimension topic keyed by the record's id."""
        if name not in DIMENSIONS:
            raise ValueError(f"unknown dimension {name!r}")
        return f"{self.namespace}.dim.{name}"

    @property
    def dims(self) -> dict[str, str]:
        return {name: self.dim(name) for name in DIMENSIONS}

    @property
    def app_id(self) -> str:
        """The Faust application id (and so its consumer group and internal topic prefix)."""
        return f"{self.namespace}-stream"

    def changelog(self, table: str) -> str:
        """The changelog of one of the stream app's tables (Faust's naming)."""
        return f"{self.app_id}-{table}-changelog"

    def owns(self, name: str) -> bool:
        """Whether `name` is a topic of this namespace: its own or the stream app's."""
        return name.startswith((f"{self.namespace}.", f"{self.app_id}-"))

    def is_compacted(self, name: str) -> bool:
        """Dimensions, valid sales and the stream app's table changelogs keep the latest
        record per key."""
        return name in (self.valid_sales, *self.dims.values()) or (
            name.startswith(f"{self.app_id}-") and name.endswith("-changelog"))
