"""Least privilege on a secured Kafka cluster: the ACLs each role of the pipeline needs, from
the topic and group names of `salesflow.topics` (the one place for names), and
`salesflow acl show | apply`.

Roles and what they do (docs/operations.md, "Access control", has the same table):

    producer  `produce dims|sales|generate`: writes the sales, dimension and dead-letter topics
    stream    `salesflow stream`: reads sales and dimensions in group `<ns>-stream`, writes valid
              sales, dead letters, rerouted sales and its changelogs in Kafka transactions
    marts     `marts follow|flush|rebuild`, `status`, `dlq show`: reads, never writes a topic
              other than its own `<ns>-marts-leader`

`apply` runs as an administrator (a principal allowed to create ACLs and topics): it creates
the namespace's shared topics (nobody else may), then the ACLs. Both are idempotent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Annotated, Literal

import typer

from salesflow.settings import Settings
from salesflow.tables import COUNTS, CUSTOMERS, TEAM
from salesflow.topics import Topics

ROLES = ("producer", "stream", "marts")
Resource = Literal["topic", "group", "transactional_id", "cluster"]
Pattern = Literal["literal", "prefixed"]

# Operations. DESCRIBE comes with READ and WRITE in Kafka's authorizer, but is listed where a
# role only looks (metadata, offsets) so the table says what each grant is for.
READ, WRITE, DESCRIBE, CREATE, IDEMPOTENT_WRITE = (
    "READ", "WRITE", "DESCRIBE", "CREATE", "IDEMPOTENT_WRITE")
CLUSTER = "kafka-cluster"


@dataclass(frozen=True)
class Grant:
    """One ALLOW rule: `principal` may do `operations` on the resource(s) named."""

    role: str
    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operations: tuple[str, ...]
    why: str


def role_grants(topics: Topics, role: str, principal: str | None = None) -> list[Grant]:
    """What `role` needs on the namespace of `topics`, and nothing more (pure)."""
    who = principal or f"User:{role}"

    def g(resource: Resource, name: str, ops: Iterable[str], why: str,
          pattern: Pattern = "literal") -> Grant:
        return Grant(role, who, resource, name, pattern, tuple(ops), why)

    dims = g("topic", f"{topics.namespace}.dim.", (READ, DESCRIBE), "dimension records",
             "prefixed")
    reader = g("group", topics.reader_group, (DESCRIBE,), "readers that assign partitions "
               "(never joined, nothing committed)")
    if role == "producer":
        return [
            g("topic", topics.sales, (WRITE, DESCRIBE), "sales"),
            g("topic", f"{topics.namespace}.dim.", (WRITE, DESCRIBE), "dimension records",
              "prefixed"),
            g("topic", topics.dlq, (WRITE, DESCRIBE), "rows that are not sales"),
            g("cluster", CLUSTER, (IDEMPOTENT_WRITE,), "idempotent producer (brokers < 3.0)"),
        ]
    if role == "stream":
        return [
            g("group", topics.app_id, (READ,), "the workers' consumer group; offsets are "
              "committed in its transactions"),
            g("group", f"{topics.app_id}-restore", (DESCRIBE,),
              "state restore (assigns partitions; never joined)"),
            reader,
            g("topic", topics.sales, (READ, WRITE, DESCRIBE), "sales in; rerouted sales out"),
            dims,
            g("topic", topics.valid_sales, (WRITE, DESCRIBE), "accepted sales"),
            g("topic", topics.dlq, (WRITE, DESCRIBE), "dead letters"),
            *[g("topic", name, (READ, WRITE, DESCRIBE, CREATE), f"state of table {table} "
                "(created by the first worker)") for table, name in topics.changelogs.items()],
            g("transactional_id", f"{topics.app_id}-", (WRITE, DESCRIBE),
              "one transactional id per worker state slot", "prefixed"),
            g("cluster", CLUSTER, (IDEMPOTENT_WRITE,), "transactional producer"),
        ]
    if role == "marts":
        return [
            *[g("topic", topics.changelog(table), (READ, DESCRIBE), f"table {table}: {why}")
              for table, why in ((CUSTOMERS, "the customers mart"), (TEAM, "the sales-team mart"),
                                 (COUNTS, "`status`"))],
            dims,
            g("topic", topics.valid_sales, (READ, DESCRIBE), "`marts rebuild`"),
            g("topic", topics.dlq, (READ, DESCRIBE), "`dlq show`, `status`"),
            g("topic", topics.sales, (DESCRIBE,), "lag of the stream app (offsets only)"),
            g("group", topics.app_id, (DESCRIBE,), "the stream app's committed offsets "
              "(`marts flush` waits for them; `status`)"),
            g("group", topics.marts_group, (READ,), "`marts follow`: who flushes"),
            reader,
            g("topic", topics.marts_leader, (READ, DESCRIBE, CREATE),
              "`marts follow`: its election topic (created by the first follower)"),
        ]
    raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")


def grants(namespace: str, principals: dict[str, str] | None = None) -> list[Grant]:
    """Every role's grants; `principals` maps a role to its principal (default User:<role>)."""
    topics, principals = Topics(namespace), principals or {}
    return [grant for role in ROLES for grant in role_grants(topics, role, principals.get(role))]


def shared_topics(topics: Topics) -> list[str]:
    """The topics `apply` creates: those no role may create (every role only reads or
    writes them)."""
    return [topics.sales, topics.dlq, topics.valid_sales, *topics.dims.values()]


# --- Kafka I/O -------------------------------------------------------------------------------


def bindings(items: Iterable[Grant]) -> list:
    """confluent-kafka `AclBinding`s, one per operation, from any host."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    kinds = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
             "transactional_id": ResourceType.TRANSACTIONAL_ID, "cluster": ResourceType.BROKER}
    return [AclBinding(kinds[x.resource], x.name, ResourcePatternType[x.pattern.upper()],
                       x.principal, "*", AclOperation[op], AclPermissionType.ALLOW)
            for x in items for op in x.operations]


def apply(settings: Settings, principals: dict[str, str] | None = None,
          timeout: float = 30.0) -> tuple[list[str], int]:
    """Create the shared topics and every grant (as an administrator); returns the topics
    created or found and the number of ACL bindings in place."""
    from confluent_kafka import KafkaException

    from salesflow.errors import KafkaUnavailable
    from salesflow.kafka import admin, check_reachable, ensure_topics, security_error

    topics = Topics(settings.namespace)
    check_reachable(settings)
    names = shared_topics(topics)
    ensure_topics(settings, names, timeout=timeout)
    wanted = bindings(grants(settings.namespace, principals))
    client = admin(settings)
    for binding, future in client.create_acls(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0]
            raise security_error(error, settings, operation="ALTER",
                                 what="creating ACLs (needs an administrator)") or \
                KafkaUnavailable(f"creating the ACL {binding}: {error.str()}") from exc
    return names, len(wanted)


# --- the `salesflow acl` verbs ---------------------------------------------------------------

acl_app = typer.Typer(no_args_is_help=True,
                      help="Least-privilege ACLs of each role (producer, stream, marts).")

_Principal = Annotated[str | None, typer.Option(
    help="Principal of the role (default User:<role>; a certificate's is its mapped name).")]


def _principals(producer: str | None, stream: str | None, marts: str | None) -> dict[str, str]:
    given = {"producer": producer, "stream": stream, "marts": marts}
    return {role: p for role, p in given.items() if p}


@acl_app.command("show")
def show_command(
    producer: _Principal = None, stream: _Principal = None, marts: _Principal = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Print the ACLs of every role for SALESFLOW_NAMESPACE (nothing is changed)."""
    from salesflow.settings import get_settings

    items = grants(get_settings().namespace, _principals(producer, stream, marts))
    if json_output:
        typer.echo(json.dumps([asdict(x) for x in items], indent=1))
        return
    for x in items:
        name = f"{x.name}*" if x.pattern == "prefixed" else x.name
        typer.echo(f"{x.principal:<16} {x.resource:<16} {name:<40} "
                   f"{','.join(x.operations):<26} {x.why}")


@acl_app.command("apply")
def apply_command(
    producer: _Principal = None, stream: _Principal = None, marts: _Principal = None,
) -> None:
    """Create the namespace's shared topics and every role's ACLs, as an administrator
    (the settings' credentials must be allowed to create topics and ACLs)."""
    from salesflow.settings import get_settings

    settings = get_settings()
    names, count = apply(settings, _principals(producer, stream, marts))
    typer.echo(f"{len(names)} topics present, {count} ACL bindings applied "
               f"for namespace {settings.namespace}")
