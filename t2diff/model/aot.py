"""AOT compile of the whole user tower for CPU serving (``serving.encoder_compile``), run without the GIL.

What is compiled: :func:`t2diff.model.t2diff.encode_from_noise` -- item lookup, the T reverse diffusion steps
(U-Net + posterior update, unrolled) and the mixed-attention head -- exported with a dynamic batch dimension and
built by AOTInductor into one shared library. Its inputs are the histories, their times, "now", the pre-drawn
noise and the item tables (inputs, not constants, so the same library serves a catalogue that grows); the
U-Net's and the head's weights are constants, swapped per model version (below).

Why the whole tower and not just the U-Net: with only the U-Net compiled, the reverse loop's arithmetic and the
head still ran as ~100 eager ops per batch (encode at batch 1 and T = 10 on this project's 2-core box: 0.73 ms
of CPU, of which the 10 U-Net calls ~0.3 ms; the whole tower compiled: 0.38 ms).

Why ctypes and not the package loader: torch's loader (``aoti_load_package``) holds the GIL for the whole run.
The serving ingress runs its HTTP handling, batching and model in one process, so every millisecond of model
time was a millisecond its event loop could not parse requests (a GIL-holder profile at 200 rps: the user
tower ~40 % of the ingress's GIL time). The library's C entry point (``AOTInductorModelContainerRun``) called
through ``ctypes.CDLL`` runs with the GIL released, so the other core serves requests meanwhile.

Why a child process for the build: ``torch.export`` + AOTInductor spend ~45 s (2-core boxes) mostly in Python
holding the GIL. Run inside the encoder replica (whose registry poller loads a new version while requests keep
coming), that stalled the replica's event loop (benchmarks/serve.md, run 10). In a child (at lower CPU priority)
the replica only waits on a pipe, GIL released. A later version with the same architecture (every version the
stream trainer publishes) gets its own container of the same library with its own weights: no compile at all.

``python -m t2diff.model.aot CHECKPOINT PACKAGE SEQ_LEN NUM_STEPS``: writes the AOTInductor package of the tower.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _tower_module(model: Any, num_steps: int) -> Any:
    """The exported root: the model's diffusion and user tower as submodules (their weights become the
    package's constants, named by these paths), the item tables as inputs."""
    from torch import nn

    from t2diff.model.t2diff import encode_from_noise

    class UserTowerCore(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.diffusion, self.user_tower = model.diffusion, model.user_tower
            self.cfg, self.num_steps = model.cfg, num_steps

        def forward(self, hist, hist_ts, now_ts, noise, id_weight, tag_weight, item_tags):  # noqa: ANN001, ANN201
            return encode_from_noise(self.diffusion, self.user_tower, self.cfg, hist, hist_ts, now_ts, noise,
                                     self.num_steps, id_weight, tag_weight, item_tags)

    return UserTowerCore().eval()


def _example_inputs(model: Any, seq_len: int, num_steps: int) -> tuple[Any, ...]:
    import torch

    B, it = 2, model.items  # 2, not 1: export specialises sizes 0 and 1
    hist = torch.zeros(B, seq_len, dtype=torch.long)  # (B, n)
    hist[:, -3:] = torch.arange(1, 4).clamp(max=it.num_items)
    ts = torch.where(hist > 0, 1_000_000, 0)
    noise = torch.zeros(model.diffusion.noise_shape(B, seq_len, model.cfg.edim, num_steps))  # (n+1, B, L', D)
    return (hist, ts, ts.amax(1), noise, it.id_weight.detach(), it.tag_weight.detach(), it.item_tags)


def export_tower(model: Any, seq_len: int, num_steps: int, package: Path) -> Path:
    """Export (dynamic batch and catalogue size) + AOTInductor-compile the user tower into ``package``."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    rows = torch.export.Dim("rows", min=2, max=1 << 31)  # catalogue rows incl. padding
    dyn = ({0: batch}, {0: batch}, {0: batch}, {1: batch}, {0: rows}, None, {0: rows})
    with torch.no_grad():
        ep = torch.export.export(_tower_module(model, num_steps), _example_inputs(model, seq_len, num_steps),
                                 dynamic_shapes=dyn)
        # Runtime constant folding: Inductor otherwise folds some weights into derived constants at compile time
        # (they vanish from the package's constants), and a later version's weights could not be swapped in.
        return Path(torch._inductor.aoti_compile_and_package(
            ep, package_path=str(package),
            inductor_configs={"aot_inductor.use_runtime_constant_folding": True,
                              "aot_inductor.package_constants_in_so": True}))


def arch_key(model: Any, seq_len: int, num_steps: int) -> str:
    """Everything the compiled library depends on besides the weight values: the model config (schedule, sizes,
    Python constants such as the norm clip) without the catalogue size (the item tables are inputs), the shapes
    of the compiled weights, the history length, the step count, torch's version."""
    import torch

    cfg = {k: v for k, v in dataclasses.asdict(model.cfg).items() if k != "num_items"}
    tensors = {n: list(t.shape) for n, t in _weights(model).items()}
    return json.dumps({"cfg": cfg, "seq_len": seq_len, "num_steps": num_steps, "tensors": tensors,
                       "torch": torch.__version__}, sort_keys=True, default=str)


def _weights(model: Any) -> dict[str, Any]:
    """The compiled constants' values, by the exported root's paths."""
    out = {}
    for prefix, mod in (("diffusion", model.diffusion), ("user_tower", model.user_tower)):
        for n, t in [*mod.named_parameters(), *mod.named_buffers()]:
            out[f"{prefix}.{n}"] = t.detach().contiguous()
    return out


# ---------------------------------------------------------------- the library's C interface, through ctypes

_CAPSULE_PTR = ctypes.pythonapi.PyCapsule_GetPointer
_CAPSULE_PTR.restype, _CAPSULE_PTR.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
_CAPSULE_NEW = ctypes.pythonapi.PyCapsule_New
_CAPSULE_NEW.restype, _CAPSULE_NEW.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class _ConstantEntry(ctypes.Structure):  # AOTInductorConstantMapEntry
    _fields_ = [("name", ctypes.c_char_p), ("handle", ctypes.c_void_p)]


@functools.cache
def _library(so_path: str) -> ctypes.CDLL:
    """The compiled library with the signatures used here (aoti_runtime/interface.h; torch is pinned)."""
    lib = ctypes.CDLL(so_path)  # CDLL, not PyDLL: calls release the GIL
    P, S, B, I32 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_bool, ctypes.c_int32
    sigs = {
        "AOTInductorModelContainerCreateWithDevice": [ctypes.POINTER(P), S, ctypes.c_char_p, ctypes.c_char_p],
        "AOTInductorModelContainerDelete": [P],
        "AOTInductorModelContainerRun": [P, ctypes.POINTER(P), S, ctypes.POINTER(P), S, P, P],
        "AOTInductorModelContainerGetNumInputs": [P, ctypes.POINTER(S)],
        "AOTInductorModelContainerGetNumOutputs": [P, ctypes.POINTER(S)],
        "AOTInductorModelContainerGetNumConstants": [P, ctypes.POINTER(S)],
        "AOTInductorModelContainerGetConstantName": [P, S, ctypes.POINTER(ctypes.c_char_p)],
        "AOTInductorModelContainerGetConstantOriginalFQN": [P, S, ctypes.POINTER(ctypes.c_char_p)],
        "AOTInductorModelContainerGetConstantFromFolded": [P, S, ctypes.POINTER(B)],
        "AOTInductorModelContainerUpdateConstantBufferPairs": [P, ctypes.POINTER(_ConstantEntry), S, B, B],
        "AOTInductorGetLastError": [ctypes.POINTER(ctypes.c_char_p)],
    }
    for name, args in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, I32
    return lib


def _check(lib: ctypes.CDLL, rc: int, what: str) -> None:
    if rc:
        msg = ctypes.c_char_p()
        lib.AOTInductorGetLastError(ctypes.byref(msg))
        raise RuntimeError(f"AOTInductor {what} failed (code {rc}): {(msg.value or b'').decode(errors='replace')}")


def _handles(tensors: list[Any]) -> list[Any]:
    """New AtenTensorHandles (capsules) referencing ``tensors``; the C side steals or we free them."""
    from torch._C import _aoti

    return _aoti.unsafe_alloc_void_ptrs_from_tensors(tensors)


class CompiledTower:
    """``tower(hist, hist_ts, now_ts, noise, id_weight, tag_weight, item_tags) -> e_u``: one model container of
    the compiled library holding this model version's weights. The run releases the GIL; per call it makes no
    Python reference cycles (the package loader's ``__call__`` made one per call through torch's pytree, and
    collecting them stalled a replica under load: benchmarks/serve.md, runs 17-18)."""

    NUM_INPUTS = 7
    # array types made once: ctypes builds (and later collects, as cyclic garbage) a new type per ``c_void_p * n``
    _IN, _OUT = ctypes.c_void_p * NUM_INPUTS, ctypes.c_void_p * 1

    def __init__(self, so_path: Path, weights: dict[str, Any], num_steps: int) -> None:
        self.num_steps = num_steps
        self._lib = lib = _library(str(so_path))
        self._h = ctypes.c_void_p()
        _check(lib, lib.AOTInductorModelContainerCreateWithDevice(ctypes.byref(self._h), 1, b"cpu", None), "load")
        n_in, n_out, n_const = ctypes.c_size_t(), ctypes.c_size_t(), ctypes.c_size_t()
        lib.AOTInductorModelContainerGetNumInputs(self._h, ctypes.byref(n_in))
        lib.AOTInductorModelContainerGetNumOutputs(self._h, ctypes.byref(n_out))
        if (n_in.value, n_out.value) != (self.NUM_INPUTS, 1):
            raise RuntimeError(f"unexpected compiled tower: {n_in.value} inputs, {n_out.value} outputs")
        lib.AOTInductorModelContainerGetNumConstants(self._h, ctypes.byref(n_const))
        names, values = [], []
        for i in range(n_const.value):
            folded, name, fqn = ctypes.c_bool(), ctypes.c_char_p(), ctypes.c_char_p()
            lib.AOTInductorModelContainerGetConstantFromFolded(self._h, i, ctypes.byref(folded))
            if folded.value:  # derived from the others; recomputed from the new values before the next run
                continue
            lib.AOTInductorModelContainerGetConstantName(self._h, i, ctypes.byref(name))
            lib.AOTInductorModelContainerGetConstantOriginalFQN(self._h, i, ctypes.byref(fqn))
            f = (fqn.value or b"").decode()
            if f in weights:
                names.append(name.value)
                values.append(weights[f])
            elif f.startswith(("diffusion.", "user_tower.")):  # a weight this model does not have
                raise RuntimeError(f"compiled constant {f!r} not in the model: not the same architecture")
            # else: a tensor literal of the graph (the step tables), fixed by the architecture key
        caps = _handles(values)
        try:
            pairs = (_ConstantEntry * len(caps))(*[_ConstantEntry(n, _CAPSULE_PTR(c, None))
                                                   for n, c in zip(names, caps)])
            _check(lib, lib.AOTInductorModelContainerUpdateConstantBufferPairs(self._h, pairs, len(caps), False, False),
                   "weight update")  # copies the values
        finally:
            from torch._C import _aoti

            _aoti.alloc_tensors_by_stealing_from_void_ptrs(caps)  # frees our handles
        self.num_weights = len(names)

    def __call__(self, *inputs: Any) -> Any:
        from torch._C import _aoti

        if len(inputs) != self.NUM_INPUTS:
            raise TypeError(f"the compiled tower takes {self.NUM_INPUTS} tensors, got {len(inputs)}")
        caps = _handles([t.contiguous() for t in inputs])
        arr = self._IN(*[_CAPSULE_PTR(c, None) for c in caps])
        out = self._OUT()
        # GIL released from here to the return; the container steals the input handles
        _check(self._lib, self._lib.AOTInductorModelContainerRun(self._h, arr, len(caps), out, 1, None, None), "run")
        return _aoti.alloc_tensors_by_stealing_from_void_ptrs([_CAPSULE_NEW(out[0], None, None)])[0]

    def __del__(self) -> None:
        h = getattr(self, "_h", None)
        if h is not None and h.value:
            with contextlib.suppress(Exception):  # at interpreter exit the library may already be gone
                self._lib.AOTInductorModelContainerDelete(h)
            self._h = None


# Architecture key -> the compiled library built for it in this process (kept until exit). A new model version
# of an architecture already compiled only loads its weights into a new container: milliseconds instead of a
# ~45 s compile (2-core box) before it can go live.
_LIBRARIES: dict[str, Path] = {}
_BUILD = threading.Lock()  # two sources' pollers in one replica (topology "local") build a library once


@functools.cache
def _cache_dir() -> Path:
    """This process's package directory, made on first use and removed at exit."""
    d = Path(tempfile.mkdtemp(prefix="t2diff-aoti-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


def _extract_library(package: Path, dest: Path) -> Path:
    with zipfile.ZipFile(package) as z:
        libs = [n for n in z.namelist() if n.endswith(".so")]
        if len(libs) != 1:
            raise RuntimeError(f"expected one shared library in {package}, found {libs}")
        out = dest / "tower.so"
        with z.open(libs[0]) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return out


def compile_in_child(model: Any, seq_len: int, num_steps: int | None = None, timeout_s: float = 600.0) -> CompiledTower:
    """The AOT-compiled user tower of ``model`` for ``num_steps`` reverse steps (default: the model's), holding
    this model's weights. The library of an architecture is built once per process, in a child process."""
    from t2diff.model import save_checkpoint

    t0 = time.perf_counter()
    steps = int(num_steps or model.diffusion.schedule.num_inference_steps)
    key = arch_key(model, seq_len, steps)
    with _BUILD:
        so = _LIBRARIES.get(key)
        compiled = so is None or not so.exists()
        if compiled:
            d = _cache_dir() / hashlib.sha1(key.encode()).hexdigest()[:16]
            d.mkdir(exist_ok=True)
            ckpt, pkg = d / "model.pt", d / "tower.pt2"
            save_checkpoint(ckpt, model)
            r = subprocess.run([sys.executable, "-m", "t2diff.model.aot", str(ckpt), str(pkg), str(seq_len), str(steps)],
                               capture_output=True, text=True, timeout=timeout_s)
            ckpt.unlink(missing_ok=True)
            if r.returncode != 0:
                raise RuntimeError(f"AOT compile failed (exit {r.returncode}): {r.stderr[-2000:]}")
            so = _extract_library(pkg, d)
            pkg.unlink(missing_ok=True)
            _LIBRARIES[key] = so
    tower = CompiledTower(so, _weights(model), steps)
    log.info("AOT-compiled user tower (T=%d, %d weights) %s in %.1f s", steps, tower.num_weights,
             "built in a child process" if compiled else "reused, weights loaded", time.perf_counter() - t0)
    return tower


def main(argv: list[str] | None = None) -> int:
    ckpt, pkg, seq_len, steps = (argv if argv is not None else sys.argv[1:])[:4]
    os.nice(10)  # serving replicas share these cores: compile in what they leave
    # Inductor's memory planner walks the graph recursively; T = 50 unrolled reverse steps nest deeper than
    # Python's default limit (3.11+ runs Python-to-Python recursion off the C stack)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
    import torch

    from t2diff.model import load_checkpoint

    torch.set_num_threads(1)
    model, _ = load_checkpoint(ckpt)
    export_tower(model.eval(), int(seq_len), int(steps), Path(pkg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
