"""The serving bench's report: every phase's figures, the per-10 s tail and the swap line reach the markdown;
the plot is written."""
from serving.bench_report import markdown, plot


def test_markdown_reports_phases_tail_windows_and_swap():
    phase = {"source": "t2diff", "rate": 200.0, "requests": 12000, "p50_ms": 3.9, "p99_ms": 9.2, "mean_ms": 4.1,
             "throughput_rps": 199.6, "errors": 0, "fallbacks": 0, "loadavg_1m": [0.5, 0.7], "cpu_probe_s": 0.52,
             "cpu_ms_per_req": {"Ingress": 3.0, "raylet": 0.04}, "p99_ms_by_10s": [8.1, 31.0], "over_15ms": 17,
             "server_gc": {"count": 2, "total_ms": 31.5}, "server_over_15ms": 3, "loadgen_gc": {"count": 0, "total_ms": 0.0, "max_ms": 0.0},
             "worst_seconds": [{"second": 41, "requests": 200, "slow": 9, "p99_ms": 38.2,
                                "cpu_ms": {"Ingress": 810.0, "raylet": 90.0, "outside:kdamond.0": 5.0, "steal": 0.0},
                                "median_cpu_ms": {"Ingress": 640.0, "raylet": 20.0, "steal": 0.0}}]}
    res = {"dataset": "ml-1m", "items": 3533, "users": 6034, "arch": "t2diff", "encoder_steps": 10, "k": 20,
           "index": "exact", "topology": "local", "encoder_compile": True, "wait_ms": 0.5, "device": "cpu",
           "wall_s": 430.0, "phases": [phase],
           "swap": {"rate": 100.0, "requests": 6000, "version": 2, "publish_s": 2.4, "errors": 0, "fallbacks": 0,
                    "versions": {"1": 3740, "2": 2260}, "p50_ms": 5.1, "p99_ms": 10.0}}
    md = markdown(res, "t2diff bench serve --topology local")
    assert "topology local" in md and "`t2diff bench serve --topology local`" in md
    assert "| t2diff | 200 | 12000 | 3.9 | 9.2 | 4.1 | 200 | 0 | 0 | 0.5 -> 0.7 | 0.52 | Ingress 3.0, raylet 0.0 |" in md
    assert ("t2diff 200 rps: [8.1, 31.0], 17 over 15 ms (3 by the ingress); GC server 2 / 31.5 ms, load generator 0 / 0.0 ms" in md)
    assert "off while requests are out" in md
    assert ("t2diff 200 rps, second 41: 9 of 200 over 15 ms (p99 38.2 ms); Ingress 810 [640], raylet 90 [20], "
            "steal 0 [0]  ") in md  # the 5 ms role is left out
    assert "responses by version {'1': 3740, '2': 2260}" in md and "0 failed" in md


def test_plot_writes_a_png_of_each_source(tmp_path):
    res = {"dataset": "ml-1m", "items": 3533,
           "phases": [{"source": src, "rate": r, "p50_ms": 2.0 + i, "p99_ms": 5.0 + i}
                      for i, src in enumerate(("t2diff", "baseline", "popularity")) for r in (50.0, 200.0)]}
    path = plot(res, tmp_path / "sub" / "latency.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
