"""AOT compile of the user tower's U-Net for CPU serving (``serving.encoder_compile``), in a child process.

Why a child process: ``torch.export`` + AOTInductor spend ~10-45 s (2-core boxes) mostly in Python holding the GIL. Run inside
the encoder replica (whose registry poller loads a new version while requests keep coming), that stalled the
replica's event loop: in a version swap under 100 rps, 324 of 3,000 requests passed their 1 s deadline and fell
back (benchmarks/serve.md, run 10). In a child (at lower CPU priority) the replica only waits on a pipe,
GIL released, and then loads the finished package in milliseconds. A later version with the same architecture
(every version the stream trainer publishes) reuses that package with its own weights: no compile at all.

``python -m serving.aot CHECKPOINT PACKAGE SEQ_LEN``: writes the AOTInductor package of the checkpoint's U-Net.
"""
from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def export_unet(unet: Any, seq_len: int, package: Path) -> Path:
    """Export (dynamic batch dimension) + AOTInductor-compile ``unet`` into ``package``."""
    import torch

    L, D = unet.padded_length(seq_len), unet.edim
    ex = (torch.zeros(2, L, D), torch.zeros(2, L, D), torch.tensor(0))  # (B, L', D) z_t, x; 0-dim step index
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        ep = torch.export.export(unet.eval(), ex, dynamic_shapes=({0: batch}, {0: batch}, None))
        # Runtime constant folding: Inductor otherwise folds some weights into derived constants at compile time
        # (they vanish from the package's constants), and a later version's weights could not be swapped in.
        return Path(torch._inductor.aoti_compile_and_package(
            ep, package_path=str(package), inductor_configs={"aot_inductor.use_runtime_constant_folding": True}))


# Architecture key -> the AOTInductor package compiled for it in this process (kept until exit). A new model
# version of an architecture already compiled only swaps its weights into a fresh load of that package
# (``load_constants``): milliseconds instead of a ~45 s compile (2-core box) before it can go live.
_PACKAGES: dict[str, Path] = {}
_BUILD = threading.Lock()  # two sources' pollers in one replica (topology "local") build a package once


def arch_key(unet: Any, seq_len: int) -> str:
    """Everything the exported graph depends on besides the weight values: module types, parameter and buffer
    shapes, the Python constants baked into the code (timestep scale, LayerNorm eps), the length, torch."""
    import torch

    mods = {n: type(m).__name__ + (f" eps={m.eps}" if hasattr(m, "eps") else "") for n, m in unet.named_modules()}
    tensors = {n: list(t.shape) for n, t in [*unet.named_parameters(), *unet.named_buffers()]}
    return json.dumps({"seq_len": seq_len, "step_weight": float(getattr(unet, "step_weight", 0.0)), "modules": mods,
                       "tensors": tensors, "torch": torch.__version__}, sort_keys=True)


@functools.cache
def _cache_dir() -> Path:
    """This process's package directory, made on first use and removed at exit."""
    d = Path(tempfile.mkdtemp(prefix="t2diff-aoti-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


class FlatRunner:
    """``runner(z_t, x, t) -> ẑ0`` through the loaded package's C++ loader, with the flat input list.

    Why not the package's own ``__call__`` (AOTICompiledModel): per call it parses the call spec and flattens
    (args, kwargs) with torch's pytree, whose recursive helper closure is a reference cycle (function -> cell ->
    function, with its annotations): T of them per encode, ~60 % of the cyclic garbage an ingress replica made at
    200 rps (gc.DEBUG_SAVEALL), and the young-generation collections that freed it stalled the replica 6-20 ms every
    few seconds. The U-Net's call spec is fixed (three tensors in, one out); it is checked once, at load."""

    def __init__(self, compiled: Any) -> None:
        from torch.utils import _pytree as pytree

        in_spec, out_spec = (pytree.treespec_loads(s) for s in compiled.loader.get_call_spec())
        if in_spec.num_leaves != 3 or out_spec.num_leaves != 1:
            raise RuntimeError(f"unexpected AOT call spec: {in_spec.num_leaves} inputs, {out_spec.num_leaves} outputs")
        self._run = compiled.loader.boxed_run  # holds the loader (and with it the package's constants)

    def __call__(self, z_t: Any, x: Any, t: Any) -> Any:
        return self._run([z_t, x, t])[0]


def compile_in_child(model: Any, seq_len: int, timeout_s: float = 600.0) -> FlatRunner:
    """The AOT-compiled U-Net of ``model`` as a callable (a loaded package holding this model's weights). The
    package of an architecture is built once per process, in a child process; later versions reuse it."""
    import torch

    from t2diff.model import save_checkpoint

    t0 = time.perf_counter()
    unet = model.diffusion.unet
    key = arch_key(unet, seq_len)
    with _BUILD:
        pkg = _PACKAGES.get(key)
        compiled = pkg is None or not pkg.exists()
        if compiled:
            d = Path(tempfile.mkdtemp(dir=_cache_dir()))
            ckpt, pkg = d / "model.pt", d / "unet.pt2"
            save_checkpoint(ckpt, model)
            r = subprocess.run([sys.executable, "-m", "serving.aot", str(ckpt), str(pkg), str(seq_len)],
                               capture_output=True, text=True, timeout=timeout_s)
            ckpt.unlink(missing_ok=True)
            if r.returncode != 0:
                raise RuntimeError(f"AOT compile failed (exit {r.returncode}): {r.stderr[-2000:]}")
            _PACKAGES[key] = pkg
    runner = torch._inductor.aoti_load_package(str(pkg))  # its own copy of the constants
    tensors = {n: t.detach().contiguous() for n, t in [*unet.named_parameters(), *unet.named_buffers()]}
    # The package's constants are the module's parameters and buffers, plus the ones Inductor derives from them
    # (_FOLDED_CONST_*), which the runner recomputes from the new values (runtime constant folding).
    fqns = [f for f in runner.get_constant_fqns() if not f.startswith("_FOLDED_CONST_")]
    missing = [f for f in fqns if f not in tensors]
    if missing:  # the package names constants this model does not have: not the same architecture after all
        raise RuntimeError(f"AOT package constants {missing[:5]} not in the model")
    runner.load_constants({f: tensors[f] for f in fqns}, check_full_update=False)
    log.info("AOT-compiled U-Net %s in %.1f s", "built in a child process" if compiled else "reused, weights swapped",
             time.perf_counter() - t0)
    return FlatRunner(runner)


def main(argv: list[str] | None = None) -> int:
    ckpt, pkg, seq_len = (argv if argv is not None else sys.argv[1:])[:3]
    os.nice(10)  # serving replicas share these cores: compile in what they leave
    import torch

    from t2diff.model import load_checkpoint

    torch.set_num_threads(1)
    model, _ = load_checkpoint(ckpt)
    export_unet(model.diffusion.unet, int(seq_len), Path(pkg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
