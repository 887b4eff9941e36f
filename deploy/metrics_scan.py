"""Find the Prometheus metrics the code defines, by reading its source (no imports: serving pulls in Ray).

Every ``Counter(...)``, ``Gauge(...)``, ``Histogram(...)``, ``Summary(...)``, ``Info(...)`` or ``Enum(...)`` call
in the scanned packages is read with :mod:`ast`. The metric name may be a literal or built from module/function
string constants (``p = "t2diff_serve_"; Counter(p + "requests", ...)``), ``namespace=``/``subsystem=`` are
honoured, and the label names are taken from the third positional argument or ``labelnames=``.

The dashboards and alerts use *exposed* series names, so each definition is expanded the way prometheus-client
exposes it: a counter ``x`` (or ``x_total``) is scraped as ``x_total``; a histogram ``h`` as ``h_bucket``,
``h_sum`` and ``h_count``; a summary ``s`` as ``s``, ``s_sum``, ``s_count``; an info ``i`` as ``i_info``.
"""
from __future__ import annotations

import ast
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Packages whose processes expose /metrics (deploy/ itself is excluded: it only *uses* metric names).
SCANNED_PACKAGES = ("streaming", "feature_store", "trainer", "serving", "t2diff")
METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}


@dataclass(frozen=True)
class MetricDef:
    name: str  # as passed to the constructor (with namespace/subsystem applied)
    kind: str  # counter | gauge | histogram | summary | info | enum
    labels: tuple[str, ...]
    source: str  # "path:line", for error messages

    def exposed(self) -> dict[str, tuple[str, ...]]:
        """Series names as scraped, each with the label names it carries."""
        n, lb = self.name, self.labels
        if self.kind == "counter":
            return {n.removesuffix("_total") + "_total": lb}
        if self.kind == "histogram":
            return {n + "_bucket": lb + ("le",), n + "_sum": lb, n + "_count": lb}
        if self.kind == "summary":
            return {n: lb + ("quantile",), n + "_sum": lb, n + "_count": lb}
        if self.kind == "info":
            return {n + "_info": lb}
        if self.kind == "enum":
            return {n: lb + (n,)}
        return {n: lb}


@dataclass
class _Consts:
    """String values each simple name is assigned anywhere in a module (a set: scopes are not tracked)."""
    values: dict[str, set[str]] = field(default_factory=dict)

    def eval(self, node: ast.AST) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.Name):
            return set(self.values.get(node.id, set()))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return {a + b for a in self.eval(node.left) for b in self.eval(node.right)}
        if isinstance(node, ast.JoinedStr):
            out = {""}
            for part in node.values:
                vals = self.eval(part.value if isinstance(part, ast.FormattedValue) else part)
                out = {a + b for a in out for b in vals}
            return out
        return set()


def _collect_consts(tree: ast.AST) -> _Consts:
    consts = _Consts()
    # Two passes so constants built from other constants resolve regardless of order.
    for _ in range(2):
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            for t in targets:
                if isinstance(t, ast.Name):
                    vals = consts.eval(value)
                    if vals:
                        consts.values.setdefault(t.id, set()).update(vals)
    return consts


def _call_class(node: ast.Call) -> str | None:
    f = node.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    return name if name in METRIC_CLASSES else None


def _labels(node: ast.Call) -> tuple[str, ...]:
    arg = node.args[2] if len(node.args) > 2 else None
    for kw in node.keywords:
        if kw.arg == "labelnames":
            arg = kw.value
    if isinstance(arg, (ast.List, ast.Tuple)):
        return tuple(e.value for e in arg.elts if isinstance(e, ast.Constant) and isinstance(e.value, str))
    return ()


def scan_file(path: Path, root: Path = REPO_ROOT) -> list[MetricDef]:
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as e:  # a file mid-edit by someone else must not hide the other files' metrics
        log.warning("skipping %s: %s", path, e)
        return []
    if "prometheus_client" not in ast.unparse(tree):
        return []
    consts = _collect_consts(tree)
    out: list[MetricDef] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or (cls := _call_class(node)) is None:
            continue
        name_node = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
        if name_node is None:
            continue
        prefix = ""
        for key in ("namespace", "subsystem"):
            kw = next((k.value for k in node.keywords if k.arg == key), None)
            vals = consts.eval(kw) if kw is not None else set()
            if len(vals) == 1 and (v := vals.pop()):
                prefix += v + "_"
        where = f"{path.relative_to(root) if path.is_relative_to(root) else path}:{node.lineno}"
        for name in sorted(consts.eval(name_node)):
            out.append(MetricDef(prefix + name, cls.lower(), _labels(node), where))
    return out


def scan_code(root: Path = REPO_ROOT, packages: tuple[str, ...] = SCANNED_PACKAGES) -> list[MetricDef]:
    defs: list[MetricDef] = []
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            defs.extend(_scan_cached(path, path.stat().st_mtime_ns, root))
    return defs


@functools.lru_cache(maxsize=4096)
def _scan_cached(path: Path, mtime_ns: int, root: Path) -> tuple[MetricDef, ...]:
    # Keyed by modification time: an edited file is read again, an unchanged one is parsed once per process.
    return tuple(scan_file(path, root))


def exposed_series(defs: list[MetricDef]) -> dict[str, set[str]]:
    """Exposed series name -> union of label names over every definition of it."""
    out: dict[str, set[str]] = {}
    for d in defs:
        for series, labels in d.exposed().items():
            out.setdefault(series, set()).update(labels)
    return out
