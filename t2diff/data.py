"""Real data sets (ML-1M, KuaiRand-Pure) as interactions plus an item catalogue with side features.

Model item indices are 1..N with 0 reserved for padding; :class:`Catalog` is the single mapping between
raw ids (what events, Feast and the API carry) and model indices (what embedding tables use). It is saved
inside every checkpoint so serving and the trainer agree on it. See the PROVENANCE.md files under
``../shared/data`` for what each file holds and what is missing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from t2diff.paths import data_dir as default_data_dir

log = logging.getLogger(__name__)

ML1M_GENRES = [
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]


@dataclass
class Catalog:
    """Raw item id <-> model index (1..N; 0 = padding) and per-item tag ids (1..num_tags; 0 = none)."""

    name: str
    raw_ids: np.ndarray  # (N,) int64, raw_ids[i] has model index i + 1
    tags: np.ndarray  # (N + 1, max_tags) int64, row 0 is the padding item
    num_tags: int
    _index: dict[int, int] = field(default_factory=dict, repr=False)
    _sorted: tuple = field(default=(), repr=False, compare=False)  # (sorted raw ids, their model indices) for indices()

    def __post_init__(self) -> None:
        self.raw_ids = np.asarray(self.raw_ids, dtype=np.int64)
        self.tags = np.asarray(self.tags, dtype=np.int64)
        if self.tags.shape[0] != len(self.raw_ids) + 1:
            raise ValueError(f"tags has {self.tags.shape[0]} rows, expected {len(self.raw_ids) + 1}")
        self._index = {int(r): i + 1 for i, r in enumerate(self.raw_ids)}

    @property
    def num_items(self) -> int:
        return len(self.raw_ids)

    @property
    def max_tags(self) -> int:
        return self.tags.shape[1]

    def __contains__(self, raw_id: int) -> bool:
        return int(raw_id) in self._index

    def index(self, raw_id: int) -> int:
        """Model index of a raw id; KeyError if unknown (callers decide: dead-letter, cold start, skip)."""
        return self._index[int(raw_id)]

    def indices(self, raw_ids: Any, unknown: int | None = None) -> np.ndarray:
        """Vectorised :meth:`index`; unknown ids map to ``unknown`` or raise KeyError when it is None.

        A binary search over the sorted raw ids, not a dict lookup per id: it runs for every history of every
        request in the serving ingress, where the per-id Python loop was ~3 % of the process's GIL time."""
        raw = np.asarray(raw_ids, dtype=np.int64).reshape(-1)
        if not self._sorted or len(self._sorted[0]) != len(self.raw_ids):  # built lazily; rebuilt after add()
            order = np.argsort(self.raw_ids, kind="stable")
            self._sorted = (self.raw_ids[order], order + 1)
        keys, idx = self._sorted
        if not len(keys):
            pos, found = np.zeros(len(raw), dtype=np.int64), np.zeros(len(raw), dtype=bool)
        else:
            pos = np.minimum(np.searchsorted(keys, raw), len(keys) - 1)
            found = keys[pos] == raw
        if not found.all():
            if unknown is None:
                raise KeyError(f"unknown item id {int(raw[~found][0])}")
            return np.where(found, idx[pos] if len(keys) else 0, unknown).astype(np.int64)
        return idx[pos]

    def raw(self, idx: Any) -> np.ndarray:
        """Raw ids of model indices (index 0, padding, maps to -1)."""
        idx = np.asarray(idx, dtype=np.int64)
        padded = np.concatenate([[-1], self.raw_ids])
        return padded[idx]

    def add(self, raw_id: int, tags: list[int] | None = None) -> int:
        """Append a new item (online growth); returns its model index. Tags beyond max_tags are dropped."""
        if int(raw_id) in self._index:
            return self._index[int(raw_id)]
        row = np.zeros((1, self.max_tags), dtype=np.int64)
        t = [x for x in (tags or []) if 0 < x <= self.num_tags][: self.max_tags]
        row[0, : len(t)] = t
        self.raw_ids = np.concatenate([self.raw_ids, [int(raw_id)]])
        self.tags = np.concatenate([self.tags, row])
        self._index[int(raw_id)] = len(self.raw_ids)
        return len(self.raw_ids)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "raw_ids": self.raw_ids.tolist(), "tags": self.tags.tolist(), "num_tags": self.num_tags}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Catalog":
        return cls(name=d["name"], raw_ids=np.asarray(d["raw_ids"]), tags=np.asarray(d["tags"]), num_tags=int(d["num_tags"]))


@dataclass
class Interactions:
    """Implicit positive interactions, one row each, in the order the data set defines (see loaders)."""

    name: str
    user: np.ndarray  # (M,) raw user id
    item: np.ndarray  # (M,) raw item id
    ts_ms: np.ndarray  # (M,) event time in milliseconds since the epoch

    def __len__(self) -> int:
        return len(self.user)


def _tag_matrix(tag_lists: list[list[int]]) -> np.ndarray:
    width = max(1, max((len(t) for t in tag_lists), default=1))
    m = np.zeros((len(tag_lists) + 1, width), dtype=np.int64)
    for i, t in enumerate(tag_lists):
        m[i + 1, : len(t)] = t
    return m


def _filter_min_len(df: pd.DataFrame, min_len: int) -> pd.DataFrame:
    counts = df.groupby("user")["item"].transform("size")
    return df[counts >= min_len]


def load_ml1m(
    variant: Literal["ge4", "users1-2999"] = "ge4",
    root: Path | None = None,
    min_user_interactions: int = 5,
) -> tuple[Interactions, Catalog]:
    """ML-1M as implicit positives.

    ``ge4``: every rating >= 4 for all users, with complete timestamps, chronological per user (the main set).
    ``users1-2999``: the original ratings.dat prefix (users 1-2999), all ratings, **original file order** --
    the closest match to the official T2Diff input, which reads ratings.dat in file order and ignores time.
    Genres from movies.dat are the item tags (the official code's 18-genre multi-hot).
    """
    root = Path(root or default_data_dir()) / "ml-1m"
    fname = {"ge4": "ratings_ge4.dat.gz", "users1-2999": "ratings_users1-2999.dat.gz"}[variant]
    df = pd.read_csv(root / fname, sep="::", engine="python", names=["user", "item", "rating", "ts"])
    if variant == "ge4":
        # Already sorted by (user, ts, movie); a stable sort keeps that and guards against reordering upstream.
        df = df.sort_values(["user", "ts"], kind="stable")
    df = _filter_min_len(df, min_user_interactions)
    movies = pd.read_csv(root / "movies.dat", sep="::", engine="python", names=["item", "title", "genres"],
                         encoding="latin-1")
    gid = {g: i + 1 for i, g in enumerate(ML1M_GENRES)}
    genres = {int(r.item): [gid[g] for g in r.genres.split("|") if g in gid] for r in movies.itertuples()}
    items = np.sort(df["item"].unique())
    cat = Catalog(f"ml-1m-{variant}", items, _tag_matrix([genres.get(int(i), []) for i in items]), len(ML1M_GENRES))
    inter = Interactions(f"ml-1m-{variant}", df["user"].to_numpy(np.int64), df["item"].to_numpy(np.int64),
                         df["ts"].to_numpy(np.int64) * 1000)
    return inter, cat


KUAIRAND_LOG = "log_standard_pure_20220425_20220508.csv.gz"
KUAIRAND_NUM_TAGS = 70  # raw tag ids are 0..68 in video_features_basic_pure; +1 keeps 0 free for "none"


def load_kuairand_log(root: Path | None = None) -> pd.DataFrame:
    """The raw KuaiRand-Pure standard log slice (all 19 columns, sorted by time_ms)."""
    root = Path(root or default_data_dir()) / "kuairand"
    return pd.read_csv(root / KUAIRAND_LOG)


def kuairand_video_tags(root: Path | None = None) -> dict[int, list[int]]:
    """video_id -> tag ids (+1 shifted). The ``tag`` column holds 1-3 comma-separated ids."""
    root = Path(root or default_data_dir()) / "kuairand"
    vf = pd.read_csv(root / "video_features_basic_pure.csv.gz", usecols=["video_id", "tag"], dtype={"tag": str})
    out: dict[int, list[int]] = {}
    for vid, tag in zip(vf["video_id"], vf["tag"]):
        out[int(vid)] = [int(t) + 1 for t in str(tag).split(",") if t.strip().isdigit()] if isinstance(tag, str) else []
    return out


def kuairand_catalog(item_ids: Any, root: Path | None = None, name: str = "kuairand-pure") -> Catalog:
    tags = kuairand_video_tags(root)
    items = np.sort(np.unique(np.asarray(item_ids, dtype=np.int64)))
    return Catalog(name, items, _tag_matrix([tags.get(int(i), []) for i in items]), KUAIRAND_NUM_TAGS)


def load_kuairand(
    root: Path | None = None,
    min_user_interactions: int = 5,
    log: pd.DataFrame | None = None,
    catalog_scope: Literal["interactions", "all"] = "interactions",
) -> tuple[Interactions, Catalog]:
    """KuaiRand-Pure slice filtered the paper's way (``tab == 1 and is_click == 1``), users with >= 5 clicks,
    chronological by time_ms. Tags from video_features_basic_pure. ``catalog_scope="all"`` puts every video
    with features in the catalogue (for streaming, where unseen videos arrive later)."""
    df = log if log is not None else load_kuairand_log(root)
    df = df[(df["tab"] == 1) & (df["is_click"] == 1)][["user_id", "video_id", "time_ms"]]
    df = df.rename(columns={"user_id": "user", "video_id": "item", "time_ms": "ts"})
    df = df.sort_values(["user", "ts"], kind="stable")
    df = _filter_min_len(df, min_user_interactions)
    if catalog_scope == "all":
        items = np.asarray(list(kuairand_video_tags(root).keys()))
    else:
        items = df["item"].unique()
    cat = kuairand_catalog(items, root)
    inter = Interactions("kuairand-pure", df["user"].to_numpy(np.int64), df["item"].to_numpy(np.int64),
                         df["ts"].to_numpy(np.int64))
    return inter, cat


def load_dataset(name: str, root: Path | None = None, min_user_interactions: int = 5) -> tuple[Interactions, Catalog]:
    """By name: ``ml-1m`` (= ml-1m-ge4), ``ml-1m-users1-2999``, ``kuairand``."""
    if name in ("ml-1m", "ml-1m-ge4"):
        return load_ml1m("ge4", root, min_user_interactions)
    if name == "ml-1m-users1-2999":
        return load_ml1m("users1-2999", root, min_user_interactions)
    if name in ("kuairand", "kuairand-pure"):
        return load_kuairand(root, min_user_interactions)
    raise ValueError(f"unknown dataset {name!r}; expected ml-1m, ml-1m-users1-2999 or kuairand")


def user_sequences(inter: Interactions, catalog: Catalog) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """raw user id -> (model item indices, ts_ms), in the data set's row order (chronological or file order)."""
    idx = catalog.indices(inter.item)
    order = np.argsort(inter.user, kind="stable")  # group by user, keep within-user order
    users, starts = np.unique(inter.user[order], return_index=True)
    bounds = list(starts) + [len(order)]
    out = {}
    for u, s, e in zip(users, bounds[:-1], bounds[1:]):
        rows = order[s:e]
        out[int(u)] = (idx[rows], inter.ts_ms[rows])
    return out


def dataset_stats(inter: Interactions, catalog: Catalog) -> dict[str, Any]:
    """The paper's Table 1 columns, plus sequence-length figures."""
    n_users = len(np.unique(inter.user))
    lens = np.bincount(np.unique(inter.user, return_inverse=True)[1])
    return {
        "dataset": inter.name,
        "users": n_users,
        "items": catalog.num_items,
        "interactions": len(inter),
        "avg_seq_len": float(lens.mean()),
        "median_seq_len": float(np.median(lens)),
        "density": len(inter) / max(1, n_users * catalog.num_items),
    }
