"""Encoder + retriever in one replica (``serving.topology: fused``): one backend call per request instead of two.

Why: on a small CPU box every Ray Serve hop costs about a millisecond of CPU on each side plus a batching
window (benchmarks/serve.md, runs 9-10); the split topology pays that twice per request (ingress -> encoder,
ingress -> retriever). Fused keeps the two concerns as separate plain classes (:class:`UserEncoder`,
:class:`Retriever`) and only runs them in the same replica, so a batch is encoded and searched without leaving
the process. Split stays the default: it lets the encoder run on a GPU replica and scale apart from the index.
``serving.topology: local`` goes one step further and runs a Recaller per model source inside the ingress
replica (serving/deployments.py ``RecallerReplica``): no Ray hop at all.
"""
from __future__ import annotations

import logging

from serving.encoder import UserEncoder
from serving.retriever import Retriever
from serving.types import BackendUnavailable, EncodeResult, SearchResult

log = logging.getLogger(__name__)

# (user_id, k, exclude_seen, deadline as time.time() or None)
Query = tuple[int, int, bool, "float | None"]


class Recaller:
    def __init__(self, encoder: UserEncoder, retriever: Retriever) -> None:
        self.encoder, self.retriever = encoder, retriever

    def recall_batch(self, queries: list[Query]) -> list[tuple[EncodeResult, SearchResult | str | None]]:
        """Per query: the encoder's result, and the search result (None when the encode was not "ok", the
        fallback reason as a string when the search failed). The search runs at the encoder's version for
        the whole batch, like the split topology's retriever."""
        deadlines = [q[3] for q in queries]
        encs = self.encoder.encode_batch([q[0] for q in queries],
                                         None if all(d is None for d in deadlines) else
                                         [float("inf") if d is None else d for d in deadlines])
        out: list[SearchResult | str | None] = [None] * len(queries)
        ok = [j for j, e in enumerate(encs) if e.status == "ok"]
        if ok:
            search = [(encs[j].vector, queries[j][1], encs[j].seen if queries[j][2] else [], encs[j].version,
                       queries[j][3]) for j in ok]
            try:
                for j, r in zip(ok, self.retriever.search_batch(search)):
                    out[j] = r
            except BackendUnavailable as e:  # the index is down: these requests fall back, the rest still answer
                for j in ok:
                    out[j] = e.kind
            except Exception:
                log.exception("search failed")
                for j in ok:
                    out[j] = "search_error"
        return list(zip(encs, out))
