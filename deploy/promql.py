"""Just enough PromQL reading to check dashboards and alerts against the code: which metric names an expression
selects, with which label matchers, and which labels it groups by. Not a parser: it tokenises after removing
strings, range/offset durations and grouping clauses, which covers every expression this repo writes."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
            "group_right", "inf", "nan", "atan2", "start", "end"}
# Labels every scraped series carries, or that the scrape config / ServiceMonitor attach.
# Not `deployment`: that one is a real label of the serving metrics and is checked like any other.
TARGET_LABELS = {"job", "instance", "component", "release", "namespace", "pod", "service", "container", "endpoint"}
# Series Prometheus itself writes for every target.
BUILTIN_SERIES = {"up": set(), "scrape_duration_seconds": set(), "scrape_samples_scraped": set()}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_OFFSET = re.compile(r"\boffset\s+-?[\w$]+")
_IDENT = re.compile(r"(?<![\w$:.])([a-zA-Z_:][\w:]*)\s*(\{[^{}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(=~|!~|!=|=)")


@dataclass
class Selector:
    metric: str
    matchers: set[str] = field(default_factory=set)  # label names used in {...}


@dataclass
class Parsed:
    selectors: list[Selector]
    grouping: set[str]  # labels in by/without/on/ignoring/group_* clauses

    @property
    def metrics(self) -> set[str]:
        return {s.metric for s in self.selectors}


def parse(expr: str) -> Parsed:
    # Keep matcher label names but drop their values (which may contain anything, e.g. Grafana "$arm").
    text = _STRING.sub('""', expr)
    grouping: set[str] = set()
    for m in _GROUPING.finditer(text):
        grouping.update(x.strip() for x in m.group(2).split(",") if x.strip())
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    selectors: list[Selector] = []
    for m in _IDENT.finditer(text):
        name, braces = m.group(1), m.group(2)
        rest = text[m.end():].lstrip()
        if braces is None and rest.startswith("("):
            continue  # function or aggregation call
        if name.lower() in KEYWORDS or re.fullmatch(r"\d.*", name):
            continue
        sel = Selector(name)
        if braces:
            sel.matchers = {g.group(1) for g in _MATCHER.finditer(braces)}
        selectors.append(sel)
    return Parsed(selectors, grouping)


def check(expr: str, series: dict[str, set[str]]) -> list[str]:
    """Problems of ``expr`` against ``series`` (exposed name -> label names, from deploy.metrics_scan)."""
    p = parse(expr)
    problems: list[str] = []
    if not p.selectors:
        problems.append(f"selects no metric: {expr}")
    known_labels: set[str] = set(TARGET_LABELS)
    series = {**BUILTIN_SERIES, **series}
    for s in p.selectors:
        if s.metric not in series:
            problems.append(f"metric {s.metric!r} is not defined in the code")
            continue
        known_labels |= series[s.metric]
        for lb in s.matchers - series[s.metric] - TARGET_LABELS:
            problems.append(f"metric {s.metric!r} has no label {lb!r}")
    for lb in p.grouping - known_labels:
        problems.append(f"grouping label {lb!r} is on none of {sorted(p.metrics)}")
    return problems
