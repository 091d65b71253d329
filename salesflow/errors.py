"""The one exception tree of salesflow.

    SalesflowError                 every error the CLI turns into one line and exit 1
     ├── ConfigError               a setting or an argument that cannot work
     │    └── KafkaSecurityError   the cluster refused this client; retrying won't help
     │         ├── KafkaTLSError             TLS failed (certificate not trusted, ...)
     │         ├── KafkaAuthenticationError  SASL: wrong user name or password
     │         └── KafkaAuthorizationError   an ACL is missing (names resource and operation)
     ├── InputError                an input file that is not what the data contract says
     ├── StackError                a local service (Kafka, MariaDB) failed to start or stop
     ├── DependencyUnavailable     a dependency did not answer; transient, worth retrying
     │    ├── KafkaUnavailable
     │    └── DatabaseUnavailable
     ├── DeliveryError             a producer could not deliver every record
     ├── ProduceFailed             a producer stopped part-way (says how far it got)
     ├── DecodeError               bytes that are not a message of a known schema
     └── DatabaseRejected          the mart database refused a statement; retrying won't help

Lower-level errors (confluent-kafka, SQLAlchemy, OSError) are mapped to the most specific of
these at the module boundary (`raise ... from exc`), so callers never match on message text.
"""


class SalesflowError(Exception):
    """Base of every salesflow error."""


class ConfigError(SalesflowError):
    """A setting or argument that cannot work."""


class InputError(SalesflowError):
    """An input file that cannot be read as the data contract says (encoding, columns, a
    field beyond the csv limit): the message names the file and the line."""


class ProduceFailed(SalesflowError):
    """A producer stopped part-way; the message says what was read, sent and dead-lettered
    so far (sending the same files again never double counts)."""
class KafkaSecurityError(ConfigError):
    """The Kafka cluster refused this client: TLS, authentication or authorization."""


class KafkaTLSError(KafkaSecurityError):
    """TLS to a broker failed: its certificate is not trusted, ours was refused, or the
    listener does not speak the configured security protocol."""


class KafkaAuthenticationError(KafkaSecurityError):
    """SASL authentication failed: wrong user name or password (or mechanism)."""


class KafkaAuthorizationError(KafkaSecurityError):
    """Authenticated, but an ACL is missing for what was asked."""


class StackError(SalesflowError):
    """A local service of `salesflow stack` failed to start, stop or answer."""


class DependencyUnavailable(SalesflowError):
    """A dependency (Kafka, the database) did not answer in time; transient."""


class KafkaUnavailable(DependencyUnavailable):
    """The Kafka cluster did not answer."""


class DatabaseUnavailable(DependencyUnavailable):
    """The mart database did not answer or refused the connection."""


class DeliveryError(SalesflowError):
    """Some records were not acknowledged by the broker."""

    def __init__(self, message: str, undelivered: int) -> None:
        super().__init__(message)
        self.undelivered = undelivered


class DecodeError(SalesflowError):
    """Bytes that are not a message of a known schema (reason `undecodable`).

    `fingerprint` names the writer schema when the bytes did name a known one (a record of
    the wrong kind, or a corrupt body), for the dead letter's headers.
    """

    def __init__(self, message: str, fingerprint: bytes | None = None) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint


class DatabaseRejected(SalesflowError):
    """The mart database refused a statement or holds a schema this release cannot write.

    Not transient (unlike `DatabaseUnavailable`): a constraint, a type, or a column changed
    under us. Retrying the same flush gives the same answer.
    """
