"""The one-kernel reverse process (t2diff/model/triton_reverse.py) against the PyTorch loop, on CPU.

Triton's interpreter (TRITON_INTERPRET=1, read when the kernel module is imported, hence a child process) runs
the kernels with numpy, so the GPU kernels' arithmetic, masking, reflect padding, pooling, upsampling and
posterior steps are checked here without a GPU (also with the channel loop unrolled). Same noise (same generator seed) for both paths.
It also checks that the whole encode torch.compile'd around the kernel (GraphedEncoder(compile_encode=True)) gives
the eager answer for the same seed.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]

CHILD = r"""
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
from t2diff.model import ModelConfig, build_model
from t2diff.model.triton_reverse import TritonReverse

out = {}
for name, edim, B, steps, bs in (("edim4", 4, 5, 3, 2), ("edim8", 8, 2, 2, 1)):
    torch.manual_seed(0)
    tags = torch.randint(0, 7, (31, 3)); tags[0] = 0
    cfg = ModelConfig(num_items=30, num_tags=6, max_tags=3, id_dim=edim // 2, tag_dim=edim // 2,
                      user_dim=2 * edim)
    m = build_model(cfg, tags).eval()
    with torch.no_grad():  # away from the init, so biases and LayerNorm affine terms matter
        for p in m.diffusion.unet.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        m.items.id_weight.mul_(300)
    g = torch.Generator().manual_seed(1)
    hist = torch.randint(1, 31, (B, 50), generator=g)
    hist[0, :47] = 0  # left padding: 3 items
    if B > 2:
        hist[2, :20] = 0
    ts = (torch.arange(50) * 60_000 + 10**12).repeat(B, 1).masked_fill(hist == 0, 0)
    res = []
    for fast in (None, TritonReverse(m.diffusion.unet, block_seqs=bs, num_warps=1),
                 TritonReverse(m.diffusion.unet, block_seqs=bs, num_warps=1, unroll=4)):
        m.diffusion.set_reverse(fast)
        gen = torch.Generator().manual_seed(7)
        res.append(m.encode_users(hist, ts, generator=gen, num_steps=steps))
    out[name] = {"diff": float((res[0] - res[1]).abs().max()), "scale": float(res[0].abs().max()),
                 "diff_unroll": float((res[0] - res[2]).abs().max())}
# GraphedEncoder(compile_encode=True) on CUDA: torch.compile of the whole encode, the kernel a graph break and the
# noise aten's randn (fallback_random), so one seed gives eager encode_users' answer
h, t = m._canon(hist, ts)
with torch.no_grad():
    torch.manual_seed(5)
    eager = m._encode(h, t, None, None, steps)
    fused = torch.compile(m._encode, dynamic=False, options={"fallback_random": True})
    torch.manual_seed(5)
    out["compiled_encode_diff"] = float((fused(h, t, None, None, steps) - eager).abs().max())
print(json.dumps(out))
"""


def test_triton_reverse_equals_the_pytorch_loop_in_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    p = subprocess.run([sys.executable, "-c", CHILD, str(ROOT)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res.pop("compiled_encode_diff") < 1e-5
    for name, r in res.items():
        # same noise, same math: only float rounding differs (summation order of the convs)
        assert r["scale"] > 0.1 and r["diff"] < 1e-5 * max(1.0, r["scale"]), (name, r)
        assert r["diff_unroll"] < 1e-5 * max(1.0, r["scale"]), (name, r)  # the unrolled channel loop


def test_supports_names_what_the_kernel_cannot_run():
    from t2diff.model.triton_reverse import TritonReverse, supports
    from t2diff.model.unet import UNet1D

    assert supports(UNet1D(4)) is None
    assert "power of two" in supports(UNet1D(6))
    assert "4-level" in supports(UNet1D(4, channels=(4, 8, 16)))
    assert "channels" in supports(UNet1D(4, channels=(4, 16, 16, 32)))
    with pytest.raises(ValueError, match="cannot run"):
        TritonReverse(UNet1D(4, channels=(4, 8, 16)))
    with pytest.raises(ValueError, match="both"):
        TritonReverse(UNet1D(4), block_seqs=4)
    with pytest.raises(ValueError, match="unroll"):
        TritonReverse(UNet1D(4), unroll=3)

