from __future__ import annotations

import numpy as np
import pytest
import torch

from streaming.local_log import LocalEventLog
from streaming.settings import StreamSettings
from t2diff.index import IndexSettings
from t2diff.model import build_model
from t2diff.registry import RegistrySettings
from trainer.online.settings import OnlineTrainerSettings
from trainer.online.synthetic import synthetic_catalog, tiny_config


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one torch thread is far faster on a shared 2-core machine than fighting for two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def stack(tmp_path):
    """Settings for a trainer on a local log under tmp_path, Milvus Lite embedded, tiny T2Diff."""
    stream = StreamSettings(log_dir=tmp_path / "log", partitions=4, known_items="any", known_users="any")
    el = LocalEventLog(stream.resolved_log_dir(), partitions=4)
    cat = synthetic_catalog(40, num_tags=6)
    torch.manual_seed(0)
    model = build_model(tiny_config(cat), torch.from_numpy(cat.tags))
    s = OnlineTrainerSettings(work_dir=tmp_path / "work", cold_tags="none", batch_size=64, poll_max=300,
                              idle_exit_s=0.3, poll_timeout_s=0.05, log_every_s=60, threads=1, window=500)
    ns = dict(stream=stream, log=el, catalog=cat, model=model, settings=s,
              registry=RegistrySettings(root=str(tmp_path / "reg")),
              index=IndexSettings(uri=str(tmp_path / "items.db"), shared=False, grace_s=0, keep=1))
    yield ns
    el.close()


def item_ids(cat) -> np.ndarray:
    return np.asarray(cat.raw_ids)
