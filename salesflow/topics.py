"""The only place that knows topic names: all derive from the namespace setting."""

from __future__ import annotations

from dataclasses import dataclass

from salesflow.tables import SEEN, TABLES, TOMBSTONE_RETENTION_SECONDS

DIMENSIONS = ("customer", "store", "product", "sales_team")
# Topics that carry whole input messages again (dead letters, valid sales) take records this
# large, above the 1 MB a producer may send to `<ns>.sales`.
TOPIC_MAX_MESSAGE_BYTES = 8 << 20


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
        """Accepted sales (`ValidSales` records, one per sales message and partition), kept
        for ever: the history a rebuild reads."""
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
        """The stream app's id: its consumer group and the prefix of its internal topics."""
        return f"{self.namespace}-stream"

    def changelog(self, table: str) -> str:
        """The changelog of one of the stream app's tables (`salesflow.tables`)."""
        return f"{self.app_id}-{table}-changelog"

    @property
    def changelogs(self) -> dict[str, str]:
        return {table: self.changelog(table) for table in TABLES}

    @property
    def marts_group(self) -> str:
        """The group of `salesflow marts follow` processes: one of them flushes."""
        return f"{self.namespace}-marts"

    @property
    def marts_leader(self) -> str:
        """A one-partition topic whose owner in `marts_group` is the flushing follower."""
        return f"{self.marts_group}-leader"

    @property
    def reader_group(self) -> str:
        """The `group.id` of consumers that only assign() partitions (confluent-kafka wants
        one): never joined, nothing committed; a cluster with ACLs asks DESCRIBE on it."""
        return f"{self.namespace}-reader"

    def owns(self, name: str) -> bool:
        """Whether `name` is a topic of this namespace: its own or the stream app's."""
        return name.startswith((f"{self.namespace}.", f"{self.app_id}-",
                                f"{self.marts_group}-"))

    def config(self, name: str) -> dict[str, str]:
        """The topic configuration the project creates `name` with.

        Dimensions and the tables' changelogs keep the latest record per key (deletions
        for `TOMBSTONE_RETENTION_SECONDS`); the valid sales and the `seen` log keep every
        record for ever.
        """
        large = {"max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES)}
        if name == self.dlq:
            return large
        if name in (self.valid_sales, self.changelog(SEEN)):
            return {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1",
                    **large}
        if name in self.dims.values() or name in self.changelogs.values():
            return {"cleanup.policy": "compact",
                    "delete.retention.ms": str(TOMBSTONE_RETENTION_SECONDS * 1000)}
        return {}
