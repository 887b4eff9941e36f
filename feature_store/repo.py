"""Run-time Feast repo: copy ``feature_repo/`` to the configured directory, render its feature_store.yaml from
:class:`FeatureSettings`, ``apply`` the definitions and materialise item features from the shared data files.

Nothing is ever written inside the source tree (tests point ``T2DIFF_RUNS_DIR`` at a tmp dir).
"""
from __future__ import annotations

import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from feature_store.settings import FeatureSettings

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

SOURCE_REPO = Path(__file__).resolve().parent / "feature_repo"
PUSH_SOURCE = "user_events_push"
USER_VIEW = "user_session"
USER_SERVICE = "user_session_v1"
ITEM_VIEW = "item_features"
ITEM_SERVICE = "item_features_v1"
# Item rows carry one fixed event time: they describe the catalogue, not an event.
ITEM_TS = datetime(2020, 1, 1, tzinfo=timezone.utc)


def render_config(settings: FeatureSettings) -> dict:
    doc = yaml.safe_load((SOURCE_REPO / "feature_store.yaml").read_text())
    doc["project"] = settings.project
    if settings.online_store == "redis":
        doc["online_store"] = {"type": "redis", "connection_string": settings.redis_connection_string,
                               "skip_dedup": True}
    return doc


def prepare_repo(settings: FeatureSettings) -> Path:
    """Create/refresh the run-time repo directory (definitions + rendered yaml); returns its path."""
    dst = settings.resolved_repo_dir()
    (dst / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy2(SOURCE_REPO / "definitions.py", dst / "definitions.py")
    (dst / "feature_store.yaml").write_text(yaml.safe_dump(render_config(settings), sort_keys=False))
    return dst


def open_store(settings: FeatureSettings) -> "FeatureStore":
    from feast import FeatureStore

    repo = settings.resolved_repo_dir()
    if not (repo / "feature_store.yaml").exists():
        prepare_repo(settings)
    return FeatureStore(repo_path=str(repo))


def _definitions(repo: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("t2diff_feature_definitions", repo / "definitions.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def item_frame(dataset: str, data_root: Path | None = None) -> pd.DataFrame:
    """One row per item of the data set with category, tags, tag names and duration."""
    from t2diff import data as D
    from t2diff.paths import data_dir

    root = Path(data_root or data_dir())
    if dataset == "kuairand":
        vf = pd.read_csv(root / "kuairand" / "video_features_basic_pure.csv.gz",
                         usecols=["video_id", "video_type", "video_duration", "tag"], dtype={"tag": str})
        tags = D.kuairand_video_tags(root)
        df = pd.DataFrame({
            "item_id": vf["video_id"].astype("int64"),
            "category": vf["video_type"].fillna("UNKNOWN").astype(str),
            "tags": [tags.get(int(v), []) for v in vf["video_id"]],
            "tag_names": [[t.strip() for t in str(s).split(",") if t.strip()] if isinstance(s, str) else []
                          for s in vf["tag"]],
            "duration_ms": vf["video_duration"].fillna(0).astype("int64"),
        })
    elif dataset == "ml-1m":
        mv = pd.read_csv(root / "ml-1m" / "movies.dat", sep="::", engine="python",
                         names=["item", "title", "genres"], encoding="latin-1")
        gid = {g: i + 1 for i, g in enumerate(D.ML1M_GENRES)}
        names = [[g for g in s.split("|") if g in gid] for s in mv["genres"]]
        df = pd.DataFrame({
            "item_id": mv["item"].astype("int64"),
            "category": [n[0] if n else "UNKNOWN" for n in names],
            "tags": [[gid[g] for g in n] for n in names],
            "tag_names": names,
            "duration_ms": 0,
        })
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    df["event_timestamp"] = ITEM_TS
    return df


def apply_repo(settings: FeatureSettings, materialize_items: bool = True) -> "FeatureStore":
    """``feast apply`` of the definitions into the run-time repo, then (optionally) item materialisation."""
    repo = prepare_repo(settings)
    store = open_store(settings)
    t0 = time.perf_counter()
    if materialize_items:
        items = item_frame(settings.dataset)
        items.to_parquet(repo / "data" / "items.parquet", index=False)
    # The push source's batch file must exist for Feast to infer nothing from it; an empty frame is enough.
    batch = repo / "data" / "user_sessions.parquet"
    if not batch.exists():
        _empty_user_frame().to_parquet(batch, index=False)
    if not (repo / "data" / "items.parquet").exists():
        item_frame(settings.dataset).iloc[:0].to_parquet(repo / "data" / "items.parquet", index=False)
    store.apply(_definitions(repo).OBJECTS)
    log.info("feast apply: %s (%s online store) in %.1fs", repo, settings.online_store, time.perf_counter() - t0)
    if materialize_items:
        t1 = time.perf_counter()
        store.materialize(start_date=ITEM_TS.replace(year=2019), end_date=datetime.now(timezone.utc),
                          feature_views=[ITEM_VIEW])
        log.info("materialised %d %s items in %.1fs", len(items), settings.dataset, time.perf_counter() - t1)
    return store


def _empty_user_frame() -> pd.DataFrame:
    cols = {"user_id": "int64", "event_timestamp": "datetime64[ns, UTC]", "created": "datetime64[ns, UTC]"}
    df = pd.DataFrame({c: pd.Series(dtype=t) for c, t in cols.items()})
    for c in ("last_items", "last_ts_ms", "counts", "log_position"):
        df[c] = pd.Series(dtype=object)
    for c in ("session_start_ms", "session_events", "last_event_ms"):
        df[c] = pd.Series(dtype="int64")
    return df
