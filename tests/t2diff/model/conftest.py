import pytest
import torch

from t2diff.model import ModelConfig, build_model

N_ITEMS, N_TAGS, MAX_TAGS = 30, 6, 3


def make_tags(n=N_ITEMS, seed=0):
    g = torch.Generator().manual_seed(seed)
    tags = torch.randint(0, N_TAGS + 1, (n + 1, MAX_TAGS), generator=g)
    tags[0] = 0
    return tags


def make_model(arch="t2diff", seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(arch=arch, num_items=N_ITEMS, num_tags=N_TAGS, max_tags=MAX_TAGS, **kw)
    return build_model(cfg, make_tags())


def make_batch(B=6, L=50, seed=1, short=True):
    g = torch.Generator().manual_seed(seed)
    hist = torch.randint(1, N_ITEMS + 1, (B, L), generator=g)
    if short:  # left padding of varying length, one row almost empty
        for b in range(B):
            hist[b, : (b * 9) % (L - 1)] = 0
    ts = (torch.arange(L) * 60_000 + 1_600_000_000_000).repeat(B, 1)
    ts = ts.masked_fill(hist == 0, 0)
    target = torch.randint(1, N_ITEMS + 1, (B,), generator=g)
    return {"hist": hist, "hist_ts": ts, "target": target, "target_ts": ts.amax(1) + 3_600_000}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is fastest, and on a shared 2-core box extra OpenMP threads spin
    against other processes (3.9 s for this directory with 1 thread vs > 60 s with 2 under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny():
    return make_model()
