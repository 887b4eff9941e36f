"""AOT compile of the user tower's U-Net for CPU serving (``serving.encoder_compile``), in a child process.

Why a child process: ``torch.export`` + AOTInductor spend ~10-20 s mostly in Python holding the GIL. Run inside
the encoder replica (whose registry poller loads a new version while requests keep coming), that stalled the
replica's event loop: in a version swap under 100 rps, 324 of 3,000 requests passed their 1 s deadline and fell
back (benchmarks/serve.md, run 10). In a child (at lower CPU priority) the replica only waits on a pipe,
GIL released, and then loads the finished package in milliseconds.

``python -m serving.aot CHECKPOINT PACKAGE SEQ_LEN``: writes the AOTInductor package of the checkpoint's U-Net.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
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
        return Path(torch._inductor.aoti_compile_and_package(ep, package_path=str(package)))


def compile_in_child(model: Any, seq_len: int, timeout_s: float = 600.0) -> Any:
    """The AOT-compiled U-Net of ``model`` as a callable (the loaded package), built in a child process."""
    import torch

    from t2diff.model import save_checkpoint

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="t2diff-aoti-") as tmp:
        ckpt, pkg = Path(tmp) / "model.pt", Path(tmp) / "unet.pt2"
        save_checkpoint(ckpt, model)
        r = subprocess.run([sys.executable, "-m", "serving.aot", str(ckpt), str(pkg), str(seq_len)],
                           capture_output=True, text=True, timeout=timeout_s)
        if r.returncode != 0:
            raise RuntimeError(f"AOT compile failed (exit {r.returncode}): {r.stderr[-2000:]}")
        runner = torch._inductor.aoti_load_package(str(pkg))  # extracts what it needs: the package can go
    log.info("AOT-compiled U-Net in a child process in %.1f s", time.perf_counter() - t0)
    return runner


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
