"""salesflow: the shared core (settings, topic names, the Avro codec, errors, the CLI)."""

__version__ = "0.1.0"
