"""The serving bench's probes: GC pauses, server-side counts, the speed probe, and the index it stops."""
import gc

from serving.bench import GcWatch


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
    import t2diff.lite_server
    from serving.world import World

    stopped = []
    monkeypatch.setattr(t2diff.lite_server, "stop_lite_server", lambda uri: stopped.append(uri))
    for uri in ("http://127.0.0.1:19531", str(tmp_path / "milvus" / "items.db")):
        World(tmp_path, tmp_path / "config.yaml", tmp_path / "registry", uri, None, [], None).stop_index()
    assert stopped == [str(tmp_path / "milvus" / "items.db")]


def test_cpu_probe_times_a_fixed_loop():
    from serving.bench import cpu_probe

    a = cpu_probe(200_000)
    assert 0.01 < a < 60  # seconds per 10^7 additions: a plausible machine, and measured, not fixed
