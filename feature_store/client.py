"""Online read client: what serving and the stream trainer call to get a user's session features.

Reads go through Feast ``get_online_features`` on the versioned feature service ``user_session_v1``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from feature_store.repo import ITEM_SERVICE, USER_SERVICE, open_store
from feature_store.settings import FeatureSettings

log = logging.getLogger(__name__)

# Order of the `counts` array feature (= feature_store.session.TYPES).
COUNT_NAMES = ("n_impressions", "n_clicks", "n_plays", "n_likes", "n_follows")


@dataclass
class UserFeatures:
    user_id: int
    last_items: list[int]  # raw item ids, oldest -> newest, <= max_items
    last_ts_ms: list[int]  # event times of last_items
    session_items: list[int]  # positive items of the current session, oldest -> newest
    session_start_ms: int
    session_events: int
    last_event_ms: int
    counts: dict[str, int] = field(default_factory=dict)  # n_impressions, n_clicks, n_plays, n_likes, n_follows
    log_partition: int = -1  # event-log position this row reflects (see definitions.py)
    log_offset: int = -1


@dataclass
class ItemFeatures:
    item_id: int
    category: str
    tags: list[int]
    tag_names: list[str]
    duration_ms: int


def _session_items(items: list | None, ts: list | None, start: int | None) -> list[int]:
    if not items or start is None or start < 0:
        return []
    return [i for i, t in zip(items, ts or []) if t >= start]


def _int(v: Any, default: int = 0) -> int:
    return default if v is None else int(v)


class FeatureClient:
    def __init__(self, settings: FeatureSettings | None = None, store: Any = None) -> None:
        self.settings = settings or FeatureSettings()
        self.store = store if store is not None else open_store(self.settings)
        self._user_service = self.store.get_feature_service(USER_SERVICE)
        self._item_service = None

    def get_user_features(self, user_ids: list[int]) -> list[UserFeatures | None]:
        """One entry per id, in order; None for a user with no row yet (cold user)."""
        if not user_ids:
            return []
        d = self.store.get_online_features(features=self._user_service,
                                           entity_rows=[{"user_id": int(u)} for u in user_ids]).to_dict()
        out: list[UserFeatures | None] = []
        for i, u in enumerate(user_ids):
            if d["last_event_ms"][i] is None:
                out.append(None)
                continue
            out.append(UserFeatures(
                user_id=int(u),
                last_items=list(d["last_items"][i] or []),
                last_ts_ms=list(d["last_ts_ms"][i] or []),
                session_items=_session_items(d["last_items"][i], d["last_ts_ms"][i], d["session_start_ms"][i]),
                session_start_ms=_int(d["session_start_ms"][i]),
                session_events=_int(d["session_events"][i]),
                last_event_ms=_int(d["last_event_ms"][i]),
                counts=dict(zip(COUNT_NAMES, list(d["counts"][i] or [0] * len(COUNT_NAMES)))),
                log_partition=int((d["log_position"][i] or [-1, -1])[0]),
                log_offset=int((d["log_position"][i] or [-1, -1])[1]),
            ))
        return out

    def get_item_features(self, item_ids: list[int]) -> list[ItemFeatures | None]:
        if not item_ids:
            return []
        if self._item_service is None:
            self._item_service = self.store.get_feature_service(ITEM_SERVICE)
        d = self.store.get_online_features(features=self._item_service,
                                           entity_rows=[{"item_id": int(i)} for i in item_ids]).to_dict()
        return [None if d["category"][j] is None else
                ItemFeatures(int(i), d["category"][j], list(d["tags"][j] or []), list(d["tag_names"][j] or []),
                             _int(d["duration_ms"][j]))
                for j, i in enumerate(item_ids)]
