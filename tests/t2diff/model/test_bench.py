"""``t2diff bench encode`` on CPU: the eager and AOT-compiled user towers timed in one run, with agreement."""
import json

from t2diff.model.cli import main


def test_bench_encode_cpu_times_eager_and_aot_side_by_side(tmp_path):
    rc = main(["bench", "encode", "--device", "cpu", "--batch-sizes", "1,3", "--steps", "2", "--min-time", "0.01",
               "--min-reps", "2", "--threads", "1", "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "encode_cpu.json").read_text())["rows"]
    got = {(r["arch"], r["mode"], r["batch"]) for r in rows if "error" not in r}
    for B in (1, 3):
        assert {("t2diff", "eager", B), ("t2diff", "aot", B), ("mixed_attention (no diffusion)", "eager", B)} <= got
    for r in rows:
        assert r["users_per_s"] > 0
        if r["mode"] == "aot":  # the compiled tower computes what the eager one does, for the same noise
            assert r["unet_max_abs_diff_vs_eager"] < 1e-4
    assert (tmp_path / "encode_cpu.md").exists() and (tmp_path / "encode_cpu.png").exists()


def test_bench_encode_rejects_gpu_modes_on_cpu(tmp_path):
    assert main(["bench", "encode", "--device", "cpu", "--modes", "graph", "--out", str(tmp_path)]) == 2
