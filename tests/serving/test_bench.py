"""The serving bench's report: every phase's figures, the per-10 s tail and the swap line reach the markdown."""
import gc

from serving.bench import GcWatch, markdown


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


def test_gc_watch_counts_this_process_collections_and_stops_at_exit():
    with GcWatch() as w:
        gc.collect()
        gc.collect(0)
    gc.collect()
    s = w.summary()
    assert s["count"] == 2 and s["max_ms"] >= 0 and s["total_ms"] >= s["max_ms"]


def test_server_counts_reads_gc_pauses_and_the_end_to_end_tail_from_metrics(monkeypatch):
    import httpx

    from serving import bench
    from serving.metrics import ServingMetrics

    m = ServingMetrics()
    for s in (0.004, 0.012, 0.015, 0.016, 0.2):
        m.latency.labels("ingress", "end_to_end").observe(s)
    m.latency.labels("encoder", "encode").observe(0.5)  # another stage: not counted
    m.gc_pause.labels("0").observe(0.002)
    m.gc_pause.labels("2").observe(0.030)
    monkeypatch.setattr(httpx, "get", lambda url, timeout: type("R", (), {"text": m.render().decode()})())
    c = bench.server_counts("http://x")
    assert c["e2e_count"] == 5 and c["e2e_count"] - c["e2e_le_15ms"] == 2
    assert c["gc_count"] == 2 and abs(c["gc_seconds"] - 0.032) < 1e-9
    assert c["gc_count_gen0"] == 1 and c["gc_count_gen2"] == 1 and abs(c["gc_seconds_gen2"] - 0.030) < 1e-9


def test_a_world_on_a_milvus_server_leaves_the_server_running(monkeypatch, tmp_path):
    """``bench serve --index-uri http://...`` serves from a Milvus server: stop_index must not treat the URL as
    an embedded Milvus Lite file to stop (it is not ours), while a Lite path still is stopped."""
    import t2diff.index
    from serving.world import World

    stopped = []
    monkeypatch.setattr(t2diff.index, "stop_lite_server", lambda uri: stopped.append(uri))
    for uri in ("http://127.0.0.1:19531", str(tmp_path / "milvus" / "items.db")):
        World(tmp_path, tmp_path / "config.yaml", tmp_path / "registry", uri, None, [], None).stop_index()
    assert stopped == [str(tmp_path / "milvus" / "items.db")]


def test_cpu_probe_times_a_fixed_loop():
    from serving.bench import cpu_probe

    a = cpu_probe(200_000)
    assert 0.01 < a < 60  # seconds per 10^7 additions: a plausible machine, and measured, not fixed
