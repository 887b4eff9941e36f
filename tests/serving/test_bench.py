"""The serving bench's report: every phase's figures, the per-10 s tail and the swap line reach the markdown."""
from serving.bench import markdown


def test_markdown_reports_phases_tail_windows_and_swap():
    phase = {"source": "t2diff", "rate": 200.0, "requests": 12000, "p50_ms": 3.9, "p99_ms": 9.2, "mean_ms": 4.1,
             "throughput_rps": 199.6, "errors": 0, "fallbacks": 0, "loadavg_1m": [0.5, 0.7],
             "cpu_ms_per_req": {"Ingress": 3.0, "raylet": 0.04}, "p99_ms_by_10s": [8.1, 31.0], "over_15ms": 17}
    res = {"dataset": "ml-1m", "items": 3533, "users": 6034, "arch": "t2diff", "encoder_steps": 10, "k": 20,
           "index": "exact", "topology": "local", "encoder_compile": True, "wait_ms": 0.5, "device": "cpu",
           "wall_s": 430.0, "phases": [phase],
           "swap": {"rate": 100.0, "requests": 6000, "version": 2, "publish_s": 2.4, "errors": 0, "fallbacks": 0,
                    "versions": {"1": 3740, "2": 2260}, "p50_ms": 5.1, "p99_ms": 10.0}}
    md = markdown(res, "t2diff bench serve --topology local")
    assert "topology local" in md and "`t2diff bench serve --topology local`" in md
    assert "| t2diff | 200 | 12000 | 3.9 | 9.2 | 4.1 | 200 | 0 | 0 | 0.5 -> 0.7 | Ingress 3.0, raylet 0.0 |" in md
    assert "t2diff 200 rps: [8.1, 31.0], 17 over 15 ms" in md
    assert "responses by version {'1': 3740, '2': 2260}" in md and "0 failed" in md
