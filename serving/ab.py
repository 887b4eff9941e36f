"""Deterministic, sticky A/B assignment.

A user's bucket is ``hash(salt, user_id)`` mapped to [0, 1); arms own consecutive slices of that interval
in config order, sized by weight. The same (salt, user) always lands in the same arm on every replica and
after restarts; changing one arm's weight only moves the users at the slice boundaries. A new salt is a new
experiment (every user reshuffled).
"""
from __future__ import annotations

import bisect
import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Callable

import yaml

from serving.settings import ArmConfig, ExperimentConfig

log = logging.getLogger(__name__)


def bucket(salt: str, user_id: int) -> float:
    """Uniform in [0, 1): the first 8 bytes of blake2b(salt:user_id) as a fraction of 2**64."""
    h = hashlib.blake2b(f"{salt}:{int(user_id)}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


class ABRouter:
    """Assigns users to arms. With ``arms_file`` set, re-reads that YAML (an ``experiment`` mapping, or the
    mapping itself) at most every ``reload_s`` seconds when its mtime changes; a bad file keeps the current
    arms and is reported through ``on_reload(result)``, never by failing requests."""

    def __init__(self, experiment: ExperimentConfig, arms_file: Path | None = None, reload_s: float = 2.0,
                 allowed_sources: set[str] | None = None,
                 on_reload: Callable[[str], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._arms_file = Path(arms_file) if arms_file else None
        self._reload_s = reload_s
        self._allowed = allowed_sources
        self._on_reload = on_reload or (lambda result: None)
        self._mtime: float | None = None
        self._next_check = 0.0
        self._set(experiment)
        self.maybe_reload(force=True)

    def _set(self, exp: ExperimentConfig) -> None:
        if self._allowed is not None:
            bad = [a.source for a in exp.arms if a.source not in self._allowed]
            if bad:
                raise ValueError(f"arms name sources this app does not run: {bad}; have {sorted(self._allowed)}")
        total = sum(a.weight for a in exp.arms)
        # Cumulative upper edges; arms with weight 0 get an empty slice and are never chosen.
        edges, acc = [], 0.0
        for a in exp.arms:
            acc += a.weight / total
            edges.append(acc)
        edges[-1] = 1.0  # guard against float round-off leaving a gap at the top
        with self._lock:
            self._exp, self._edges = exp, edges

    @property
    def experiment(self) -> ExperimentConfig:
        return self._exp

    def arms(self) -> list[ArmConfig]:
        return list(self._exp.arms)

    def assign(self, user_id: int) -> ArmConfig:
        self.maybe_reload()
        exp, edges = self._exp, self._edges
        i = bisect.bisect_right(edges, bucket(exp.salt, user_id))
        i = min(i, len(edges) - 1)
        # bisect_right lands on the first edge > b; skip zero-weight arms that share an edge
        while exp.arms[i].weight == 0 and i < len(edges) - 1:
            i += 1
        return exp.arms[i]

    def maybe_reload(self, force: bool = False) -> bool:
        """Re-read the arms file if it changed. Returns True when new arms were applied."""
        if self._arms_file is None:
            return False
        now = time.monotonic()
        if not force and now < self._next_check:
            return False
        self._next_check = now + self._reload_s
        try:
            mtime = self._arms_file.stat().st_mtime
        except FileNotFoundError:
            return False
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            doc = yaml.safe_load(self._arms_file.read_text()) or {}
            if isinstance(doc, dict) and "experiment" in doc:
                doc = doc["experiment"]
            exp = ExperimentConfig.model_validate(doc)
            self._set(exp)
        except Exception as e:  # a typo in the arms file must not take traffic down
            log.error("arms file %s rejected, keeping current arms: %s", self._arms_file, e)
            self._on_reload("rejected")
            return False
        log.info("arms reloaded from %s: %s", self._arms_file,
                 ", ".join(f"{a.name}={a.weight:g}->{a.source}" for a in exp.arms))
        self._on_reload("applied")
        return True
