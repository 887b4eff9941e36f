"""Values passed between deployments (pickled by Ray, so plain dataclasses of builtins)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Why an encoder could not produce a vector. Each one is a degraded mode answered by the fallback source.
# "overloaded": the request waited in the encoder's queue past its deadline and was shed without running the
# model (under overload, computing answers nobody waits for any more would starve the fresh requests too).
EncodeStatus = Literal["ok", "unknown_user", "empty_history", "features_unavailable", "model_unavailable",
                       "overloaded"]


@dataclass
class EncodeResult:
    status: EncodeStatus
    vector: list[float] | None = None  # (D,)
    version: int | str | None = None  # model version that produced the vector
    seen: list[int] = field(default_factory=list)  # raw item ids in the user's history (for exclude_seen)
    encode_ms: float = 0.0  # time inside the encoder replica, batching wait included
    batch_size: int = 1


@dataclass
class SearchResult:
    items: list[tuple[int, float]]  # (raw item id, score), best first
    version: int | str | None
    search_ms: float = 0.0
    shed: bool = False  # past its deadline before it ran: not searched (the caller had already given up)


class BackendUnavailable(RuntimeError):
    """A dependency (Milvus, Feast, the registry) cannot be reached; the caller falls back."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message

    def __reduce__(self):  # Ray re-raises remote exceptions by pickling them: keep both arguments
        return (type(self), (self.kind, self.message))
