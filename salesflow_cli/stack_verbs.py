"""`salesflow stack ...`: the local services (salesflow.stack.commands) and `stack kafka TOOL`,
Kafka's own command-line tools from the same jars as the local broker.

    salesflow stack kafka consumer-groups --describe --group salesflow-stream
    salesflow stack kafka topics --list

`--bootstrap-server` defaults to SALESFLOW_KAFKA_BOOTSTRAP; everything else goes to the tool
as given (put `--` before a tool option that salesflow would take, such as `--help`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import typer

from salesflow.errors import StackError
from salesflow.stack.commands import stack_app

# The tools of Kafka's bin/ folder: script name (without kafka- and .sh) -> main class.
TOOLS: dict[str, str] = {
    "consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "topics": "org.apache.kafka.tools.TopicCommand",
    "console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "configs": "kafka.admin.ConfigCommand",
    "get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "transactions": "org.apache.kafka.tools.TransactionsCommand",
    "delete-records": "org.apache.kafka.tools.DeleteRecordsCommand",
    "log-dirs": "org.apache.kafka.tools.LogDirsCommand",
    "broker-api-versions": "org.apache.kafka.tools.BrokerApiVersionsCommand",
    "metadata-quorum": "org.apache.kafka.tools.MetadataQuorumCommand",
}
TOOLS_LOG4J = Path(__file__).resolve().parents[1] / "ops" / "kafka" / "tools-log4j2.properties"


def tool_command(java: str, libs: Path, tool: str, args: list[str], bootstrap: str) -> list[str]:
    """The java command line of one tool (pure)."""
    if tool not in TOOLS:
        raise StackError(f"unknown Kafka tool {tool!r}; one of: {', '.join(TOOLS)}")
    argv = [java, "-Xmx256m", f"-Dlog4j2.configurationFile={TOOLS_LOG4J}", "-cp", f"{libs}/*",
            TOOLS[tool], *args]
    if ("--bootstrap-server" not in args and tool != "metadata-quorum") or (
            tool == "metadata-quorum" and "--bootstrap-server" not in args
            and "--bootstrap-controller" not in args):
        argv += ["--bootstrap-server", bootstrap]
    return argv


@stack_app.command("kafka", context_settings={"allow_extra_args": True,
                                              "ignore_unknown_options": True})
def kafka_tool(
    ctx: typer.Context,
    tool: str = typer.Argument(..., help=f"One of: {', '.join(TOOLS)}."),
) -> None:
    """Run one of Kafka's command-line tools (kafka-TOOL.sh), e.g. consumer-groups.

    --bootstrap-server defaults to SALESFLOW_KAFKA_BOOTSTRAP. The first run fetches the
    tools' jars with the broker's (Maven Central, cached)."""
    from salesflow.settings import get_settings
    from salesflow.stack.kafka import ensure_jars

    settings = get_settings()
    if tool not in TOOLS:
        raise StackError(f"unknown Kafka tool {tool!r}; one of: {', '.join(TOOLS)}")
    java = shutil.which("java")
    if java is None:
        raise StackError("Java is not installed (Kafka's tools need Java 17+): "
                         "apt-get install openjdk-17-jre-headless")
    argv = tool_command(java, ensure_jars(settings), tool, list(ctx.args),
                        settings.kafka_bootstrap)
    code = subprocess.call(argv, env=os.environ | {"KAFKA_HEAP_OPTS": "-Xmx256m"})
    if code:
        raise typer.Exit(code)
