"""Helpers for the ops/ tests: the metrics salesflow exports, and the metrics a PromQL uses.

The exported names are read from `salesflow/instrumentation.py` without importing it (its
constructors are the single source); the names a query uses are found by removing what is
not a metric name (strings, label matchers, grouping lists, ranges, functions, keywords).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
INSTRUMENTATION = ROOT / "salesflow" / "instrumentation.py"

_METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary"}

#: Grafana's built-in interval variables, replaced by plain durations before parsing.
GRAFANA_INTERVALS = {
    "$__rate_interval": "1m",
    "${__rate_interval}": "1m",
    "$__interval": "1m",
    "${__interval}": "1m",
    "$__range": "1h",
    "${__range}": "1h",
}

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "atan2", "inf", "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?!\w)(\s*\()?")


def metric_declarations(path: Path = INSTRUMENTATION) -> dict[str, str]:
    """Metric name -> type ("Counter", ...) of every metric constructed in the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        first = node.args[0]
        if name in _METRIC_CLASSES and isinstance(first, ast.Constant) and isinstance(
                first.value, str):
            found[first.value] = name
    return found


def exported_series_names(declared: dict[str, str]) -> set[str]:
    """The series names those metrics export, plus Prometheus' own `up`.

    Histograms add `_bucket`, `_sum` and `_count`; summaries `_sum` and `_count`.
    """
    names = {"up"}
    for name, kind in declared.items():
        names.add(name)
        if kind == "Histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "Summary":
            names |= {f"{name}_sum", f"{name}_count"}
    return names


def replace_grafana_variables(expr: str) -> str:
    for variable, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (`foo`, `foo{...}`, `{__name__="foo"}`)."""
    names = set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    text = _STRING.sub('""', replace_grafana_variables(expr))
    text = _MATCHERS.sub("", text)
    text = _GROUPING.sub("", text)
    text = _RANGE.sub("", text)
    for match in _IDENT.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue  # a function, an aggregation or a keyword
        names.add(word)
    return names
