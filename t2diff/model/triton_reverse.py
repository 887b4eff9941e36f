"""The whole reverse process (Alg. 2) as ONE Triton kernel: T U-Net calls + T posterior steps, no HBM traffic
for activations.

Why: the compiled + CUDA-graphed reverse loop (``GraphedEncoder(compile=True)``) is ~50 x (10 convs + norms)
kernels per encode whose operands are 4-32 channels wide; at batch 4096 each of those kernels is launch/tail
bound and writes and re-reads its activations through HBM (benchmarks/encode.md: half cuBLAS GEMMs with 4-32
output columns, half elementwise). Here one program owns ``BS`` sequences for all T steps: every level's
activations live in a per-program scratch that stays in L1/L2, and a k=3 conv is 3·C_in rank-1 updates of a
(BS, L, C_out) register block read straight from that scratch at shifted rows (reflect padding, max-pool and
nearest upsampling are just row arithmetic in the loads, so they cost no pass of their own).

Scope: the official U-Net shape, i.e. 4 levels with channels (D, 2D, 4D, 8D) for a power-of-two edim D
(``unet_channels=(4, 8, 16, 32)`` scaled by edim/4) and no output projection; ``supports(unet)`` says whether
a given U-Net qualifies, and the callers keep the PyTorch loop otherwise. The step noise is drawn by the
caller (``DriftDiffusion.sample``) exactly as the PyTorch loop draws it, so both paths give the same result
for the same generator, up to float rounding (tests/t2diff/model/test_triton_reverse.py runs the kernel in
Triton's CPU interpreter against the PyTorch loop).
"""
from __future__ import annotations

import torch
from torch import nn

try:  # optional: CUDA fast path (and Triton's CPU interpreter in tests)
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None


def supports(unet: nn.Module) -> str | None:
    """None if ``unet`` has the shape the kernel implements, else the reason it does not."""
    if triton is None:
        return "triton is not installed"
    D = unet.edim
    if D & (D - 1) or D < 1:
        return f"edim {D} is not a power of two"
    if unet.levels != 4 or not isinstance(unet.out, nn.Identity):
        return "the kernel implements the 4-level U-Net without an output projection"
    want = (D, 2 * D, 4 * D, 8 * D)
    got = tuple(b.norm.normalized_shape[0] for b in unet.down)
    if got != want:
        return f"channels {got} are not {want}"
    return None


if triton is not None:
    # Every tensor below is 3-D (BS sequences, BL positions, channels) and every load is made in that shape
    # ((BS, BL, 1) columns, (1, 1, COUT) weight rows), so the rank-1 updates broadcast inside one layout:
    # loading 2-D columns and expanding them cost a layout conversion through shared memory per update.

    @triton.jit
    def _acc(acc, src, b3, l3, L, lmask, w, co3, CIN: tl.constexpr, WOFF: tl.constexpr, C: tl.constexpr,
             SRC_L: tl.constexpr, MODE: tl.constexpr, TAPS: tl.constexpr, UNROLL: tl.constexpr):
        """acc (BS, BL, COUT) += conv taps of C input channels read from ``src``.

        Input row j of this level (k=3 'same' conv, reflect-padded: j = -1 -> 1, j = L -> L-2) comes from
        ``src`` laid out channel-major (rows, C, SRC_L): MODE 0 row j, MODE 1 max(row 2j, row 2j+1) (max-pool of the level
        above), MODE 2 row j // 2 (nearest upsampling of the level below). Its weights are columns
        tap·CIN + WOFF + c of the Linear weight (COUT, TAPS·CIN).
        """
        for tap in range(TAPS):
            if TAPS == 1:
                j = l3
            else:
                j = l3 + (tap - 1)
                j = tl.where(j < 0, 1, j)
                j = tl.where(j > L - 1, L - 2, j)
            if MODE == 1:
                r0 = 2 * j
            elif MODE == 2:
                r0 = j // 2
            else:
                r0 = j
            base = b3 * (SRC_L * C) + r0  # (BS, BL, 1): channel-major scratch, so a column is contiguous
            wbase = co3 * (TAPS * CIN) + (tap * CIN + WOFF)  # (1, 1, COUT)
            # a runtime loop, not static_range: fully unrolled, the kernel's ~330 rank-1 updates took Triton
            # 5 minutes to compile per configuration. Unrolled by UNROLL instead: one warp per program runs one
            # dependent load -> FMA chain at a time, so independent loads in flight are what hide L1 latency
            for c in tl.range(C, loop_unroll_factor=UNROLL):
                v = tl.load(src + base + c * SRC_L, mask=lmask, other=0.0)
                if MODE == 1:
                    v = tl.maximum(v, tl.load(src + base + 1 + c * SRC_L, mask=lmask, other=0.0))
                acc += v * tl.load(w + wbase + c)
        return acc

    @triton.jit
    def _finish(acc, bias, lnw, lnb, co3, COUT: tl.constexpr, EPS: tl.constexpr, NORM: tl.constexpr):
        """+ bias -> swish (-> LayerNorm over the COUT channels, as Conv3Block does)."""
        acc = acc + tl.load(bias + co3)
        acc = acc * tl.sigmoid(acc)
        if NORM:
            mean = tl.sum(acc, axis=2, keep_dims=True) / COUT
            d = acc - mean
            var = tl.sum(d * d, axis=2, keep_dims=True) / COUT
            acc = d * tl.rsqrt(var + EPS) * tl.load(lnw + co3) + tl.load(lnb + co3)
        return acc

    @triton.jit
    def _idx(pid, BS: tl.constexpr, BL: tl.constexpr, COUT: tl.constexpr):
        b3 = (pid * BS + tl.arange(0, BS))[:, None, None]
        l3 = tl.arange(0, BL)[None, :, None]
        co3 = tl.arange(0, COUT)[None, None, :]
        return b3, l3, co3

    @triton.jit
    def _store(dst, val, pid, L: tl.constexpr, BL: tl.constexpr, COUT: tl.constexpr, BS: tl.constexpr):
        b3, l3, co3 = _idx(pid, BS, BL, COUT)
        tl.store(dst + b3 * (L * COUT) + co3 * L + l3, val, mask=(l3 < L) & (co3 < COUT))

    @triton.jit
    def _conv(src_a, src_b, pid, L: tl.constexpr, BL: tl.constexpr, CA: tl.constexpr, CB: tl.constexpr,
              MODE_A: tl.constexpr, SRC_LA: tl.constexpr, SRC_LB: tl.constexpr, w, bias, lnw, lnb,
              COUT: tl.constexpr, BS: tl.constexpr, EPS: tl.constexpr, UNROLL: tl.constexpr):
        """Conv3Block over the channel concat [A (CA, read in MODE_A), B (CB, same level; CB = 0: none)]."""
        b3, l3, co3 = _idx(pid, BS, BL, COUT)
        lm = (l3 < L) & (b3 >= 0)  # (BS, BL, 1)
        acc = tl.zeros((BS, BL, COUT), tl.float32)
        acc = _acc(acc, src_a, b3, l3, L, lm, w, co3, CA + CB, 0, CA, SRC_LA, MODE_A, 3, UNROLL)
        if CB > 0:
            acc = _acc(acc, src_b, b3, l3, L, lm, w, co3, CA + CB, CA, CB, SRC_LB, 0, 3, UNROLL)
        return _finish(acc, bias, lnw, lnb, co3, COUT, EPS, True)

    @triton.jit
    def _down(src, dst, pid, L: tl.constexpr, BL: tl.constexpr, CIN: tl.constexpr, w, bias, lnw, lnb,
              COUT: tl.constexpr, BS: tl.constexpr, EPS: tl.constexpr, UNROLL: tl.constexpr):
        """Down level: conv(max-pool(level above)) -> the skip / next level's input."""
        _store(dst, _conv(src, src, pid, L, BL, CIN, 0, 1, 2 * L, 2 * L, w, bias, lnw, lnb, COUT, BS, EPS, UNROLL),
               pid, L, BL, COUT, BS)
        tl.debug_barrier()

    @triton.jit
    def _up(src, skip, tmp, dst, pid, L: tl.constexpr, BL: tl.constexpr, C: tl.constexpr, pw, pb, w, bias, lnw,
            lnb, BS: tl.constexpr, EPS: tl.constexpr, STORE: tl.constexpr, UNROLL: tl.constexpr):
        """Up level: tmp = swish(1x1 conv(src)) at the lower resolution (L/2, 2C -> C), then
        conv(cat(upsample(tmp), skip)) at L; stored to ``dst`` unless STORE is False (then returned)."""
        b3, l3, co3 = _idx(pid, BS, BL // 2, C)
        acc = tl.zeros((BS, BL // 2, C), tl.float32)
        acc = _acc(acc, src, b3, l3, L // 2, (l3 < L // 2) & (b3 >= 0), pw, co3, 2 * C, 0, 2 * C, L // 2, 0, 1,
                   UNROLL)
        _store(tmp, _finish(acc, pb, pb, pb, co3, C, 0.0, False), pid, L // 2, BL // 2, C, BS)
        tl.debug_barrier()
        h = _conv(tmp, skip, pid, L, BL, C, C, 2, L // 2, L, w, bias, lnw, lnb, C, BS, EPS, UNROLL)
        if STORE:
            _store(dst, h, pid, L, BL, C, BS)
            tl.debug_barrier()
        return h

    @triton.jit(do_not_specialize=["n_steps", "B"])  # one binary for every batch size and step count
    def _reverse_kernel(
            x_ptr, m_ptr, noise_ptr, out_ptr, ts_ptr, c0_ptr, ct_ptr, sg_ptr, temb_ptr, n_steps, B, step_weight,
            w0, b0, g0, e0, w1, b1, g1, e1, w2, b2, g2, e2, w3, b3_, g3, e3,
            pw2, pb2, uw2, ub2, ug2, ue2, pw1, pb1, uw1, ub1, ug1, ue1, pw0, pb0, uw0, ub0, ug0, ue0,
            z_s, s0, s1, s2, h3, u2, h2, u1, u0, h1,
            D: tl.constexpr, L0: tl.constexpr, BL0: tl.constexpr, BS: tl.constexpr, EPS: tl.constexpr,
            UNROLL: tl.constexpr):
        pid = tl.program_id(0)  # scratch has >= grid·BS rows; the inputs and output have B
        b3, l3, co3 = _idx(pid, BS, BL0, D)
        lm0 = (l3 < L0) & (b3 < B)  # (BS, BL0, 1)
        m3 = lm0 & (co3 < D)  # (BS, BL0, D)
        addr = b3 * (L0 * D) + l3 * D + co3  # noise and output: (B, L, D)
        zaddr = b3 * (L0 * D) + co3 * L0 + l3  # the z_t scratch (and x): channel-major (B, D, L)
        mval = tl.load(m_ptr + b3 * L0 + l3, mask=lm0, other=0.0)  # (BS, BL0, 1)
        step_stride = B * L0 * D
        z = tl.load(noise_ptr + addr, mask=m3, other=0.0) * mval  # z_T ~ N(0, I), zero under the mask
        tl.store(z_s + zaddr, z, mask=m3)
        tl.debug_barrier()
        # conv0's X half is the same at every step: computed once and kept (registers, or spilled to L1)
        acc_x = _acc(tl.zeros((BS, BL0, D), tl.float32), x_ptr, b3, l3, L0, lm0, w0, co3, 2 * D, D, D, L0, 0, 3,
                     UNROLL)
        for i in range(n_steps):
            # ---- down path: conv(cat(z_t, X) + w·temb) (Eq. 15), then conv(max-pool(previous level)). The
            # timestep embedding is added to every input value of conv0, the reflected pad rows included, so
            # it enters as the per-step bias Σ_k W0[:, k]·w·temb[k mod 2D] over the 3·2D weight columns k
            temb = temb_ptr + tl.load(ts_ptr + i) * (2 * D)
            tb = tl.zeros((1, 1, D), tl.float32)
            for k in range(6 * D):
                tb += tl.load(temb + k % (2 * D)) * tl.load(w0 + co3 * (6 * D) + k)
            acc = acc_x + tb * step_weight
            acc = _acc(acc, z_s, b3, l3, L0, lm0, w0, co3, 2 * D, 0, D, L0, 0, 3, UNROLL)
            _store(s0, _finish(acc, b0, g0, e0, co3, D, EPS, True), pid, L0, BL0, D, BS)
            tl.debug_barrier()
            _down(s0, s1, pid, L0 // 2, BL0 // 2, D, w1, b1, g1, e1, 2 * D, BS, EPS, UNROLL)
            _down(s1, s2, pid, L0 // 4, BL0 // 4, 2 * D, w2, b2, g2, e2, 4 * D, BS, EPS, UNROLL)
            _down(s2, h3, pid, L0 // 8, BL0 // 8, 4 * D, w3, b3_, g3, e3, 8 * D, BS, EPS, UNROLL)
            # ---- up path: swish(1x1 conv) at the low resolution, then conv(cat(upsample(that), skip))
            _up(h3, s2, u2, h2, pid, L0 // 4, BL0 // 4, 4 * D, pw2, pb2, uw2, ub2, ug2, ue2, BS, EPS, True, UNROLL)
            _up(h2, s1, u1, h1, pid, L0 // 2, BL0 // 2, 2 * D, pw1, pb1, uw1, ub1, ug1, ue1, BS, EPS, True, UNROLL)
            z0_hat = _up(h1, s0, u0, h1, pid, L0, BL0, D, pw0, pb0, uw0, ub0, ug0, ue0, BS, EPS, False, UNROLL)
            # ---- posterior step (Eq. 17): z <- c0·m·ẑ0 + ct·z + σ·m·ε; the last step returns ẑ0 itself
            c0 = tl.load(c0_ptr + i)
            ct = tl.load(ct_ptr + i)
            sg = tl.load(sg_ptr + i)
            z = tl.load(z_s + zaddr, mask=m3, other=0.0)
            eps = tl.load(noise_ptr + (i + 1) * step_stride + addr, mask=m3, other=0.0)
            z = tl.where(i == n_steps - 1, z0_hat, sg * mval * eps + c0 * mval * z0_hat + ct * z)
            tl.debug_barrier()  # every thread has read z_t before any writes z_{t-1}
            tl.store(z_s + zaddr, z, mask=m3)
            tl.debug_barrier()
        tl.store(out_ptr + addr, z, mask=m3)

    # Sequences per program, warps and channel-loop unrolling, chosen by timing on the first call per (batch,
    # steps): the best set depends on the GPU (occupancy vs. per-program scratch in L1), so it is measured.
    _reverse_tuned = triton.autotune(
        configs=[triton.Config({"BS": bs, "UNROLL": u}, num_warps=w) for bs in (2, 4, 8) for w in (1, 2) for u in (1, 4)],
        key=["B", "n_steps"])(_reverse_kernel)

MAX_BS = 16  # scratch rows are rounded up to this, so every autotune config fits


class TritonReverse:
    """Callable ``(x (B, L, D), m (B, L), noise (n+1, B, L, D), ts, c0, ct, sg) -> ẑ0 (B, L, D)``: the
    reverse loop of ``DriftDiffusion.sample`` in one kernel launch. Reads the U-Net's parameters at every
    call (no packed copy to go stale when the model trains). ``block_seqs`` sequences per program and
    ``num_warps``; None for both = autotuned on the first call per (batch, steps) (so make that call outside
    a CUDA graph capture, as ``GraphedEncoder``'s warm-up does).

    ``unroll`` (1, 2 or 4): the channel loop's unroll factor for a fixed (block_seqs, num_warps); the autotuner
    picks it along with them. Only float32 is implemented: float16 scratch, and the convs as ``tl.dot``
    (tf32x3 / tf32 / ieee), were measured and dropped (benchmarks/encode.md).
    """

    def __init__(self, unet: nn.Module, block_seqs: int | None = None, num_warps: int | None = None,
                 unroll: int = 1) -> None:
        why = supports(unet)
        if why:
            raise ValueError(f"TritonReverse cannot run this U-Net: {why}")
        if (block_seqs is None) != (num_warps is None):
            raise ValueError("give both block_seqs and num_warps, or neither (autotune)")
        if block_seqs is not None and (block_seqs & (block_seqs - 1) or not 1 <= block_seqs <= MAX_BS):
            raise ValueError(f"block_seqs must be a power of two in 1..{MAX_BS}")
        if unroll not in (1, 2, 4):
            raise ValueError(f"unroll must be 1, 2 or 4, got {unroll}")
        self.unet, self.BS, self.num_warps, self.unroll = unet, block_seqs, num_warps, unroll
        self._scratch: dict[tuple[int, int, torch.device], list[torch.Tensor]] = {}

    def _params(self) -> list[torch.Tensor]:
        u = self.unet

        def blk(m):
            return [m.proj.weight, m.proj.bias, m.norm.weight, m.norm.bias]

        ps = [p for m in u.down for p in blk(m)]
        for proj, up in zip(u.up_proj, u.up):  # levels 2, 1, 0
            ps += [proj.weight, proj.bias] + blk(up)
        return [p.detach().float().contiguous() for p in ps]

    def _buffers(self, rows: int, L: int, device: torch.device) -> list[torch.Tensor]:
        """The kernel's 10 scratch arguments (z, s0, s1, s2, h3, u2, h2, u1, u0, h1) over 6 buffers: a level's
        output reuses a buffer whose contents are dead by then (h2 -> h3's, h1 -> s2's, the three 1x1-conv
        temporaries u2/u1/u0 -> one), so each program touches 35 % less memory per step (L1 working set).
        Sizes match: per sequence h3 and h2 are both L·D values, s2 and h1 L·D, u2/u1/u0 L·D/2. Each holds a
        sequence channel-major, (C, L_level), so the kernel's per-channel column reads are contiguous."""
        key = (rows, L, device)
        if key not in self._scratch:
            D = self.unet.edim
            z, s0, s1, s2, h3, u = (torch.empty((rows,) + shape, device=device, dtype=torch.float32)
                                    for shape in ((L, D), (L, D), (L // 2, 2 * D), (L // 4, 4 * D), (L // 8, 8 * D),
                                                  (L // 8, 4 * D)))
            self._scratch[key] = [z, s0, s1, s2, h3, u, h3, u, u, s2]
        return self._scratch[key]

    @torch.compiler.disable  # opaque to torch.compile (GraphedEncoder(compile_encode=True)): a graph break
    def __call__(self, x: torch.Tensor, m: torch.Tensor, noise: torch.Tensor, ts: torch.Tensor, c0: torch.Tensor,
                 ct: torch.Tensor, sg: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        n = int(ts.shape[0])
        if L % 8 or L < 16:
            raise ValueError(f"sequence length {L} must be a multiple of 8 and >= 16 (UNet1D.padded_length)")
        if noise.shape != (n + 1, B, L, D):
            raise ValueError(f"noise must be {(n + 1, B, L, D)}, got {tuple(noise.shape)}")
        out = torch.empty_like(x, dtype=torch.float32)
        scratch = self._buffers(triton.cdiv(B, MAX_BS) * MAX_BS, L, x.device)
        tuned = self.BS is None
        kernel = _reverse_tuned if tuned else _reverse_kernel
        grid = (lambda meta: (triton.cdiv(B, meta["BS"]),)) if tuned else (triton.cdiv(B, self.BS),)
        fixed = {} if tuned else {"BS": self.BS, "num_warps": self.num_warps, "UNROLL": self.unroll}
        kernel[grid](
            # x channel-major (B, D, L), as the scratch: the kernel reads it a column at a time
            x.float().transpose(1, 2).contiguous(), m.float().contiguous(), noise.float().contiguous(), out,
            ts.contiguous(),
            c0.float().contiguous(), ct.float().contiguous(), sg.float().contiguous(),
            self.unet.step_emb.float().contiguous(), n, B, float(self.unet.step_weight),
            *self._params(), *scratch,
            D=D, L0=L, BL0=triton.next_power_of_2(L), EPS=float(self.unet.down[0].norm.eps), **fixed)
        return out.to(x.dtype)
