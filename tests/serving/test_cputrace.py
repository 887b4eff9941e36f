"""The per-second CPU trace: who used the CPU in which second, lined up with the bench's per-second latency."""
import time

import numpy as np

from serving.cputrace import CpuTrace, cpu_by_second, per_second, role_of, worst_seconds


def test_role_of_names_serve_parts_ray_daemons_and_outsiders():
    assert role_of("ray::ServeReplica", "ray::ServeReplica:bench:IngressDeployment", 10, 1) == "Ingress"
    assert role_of("raylet", "/venv/lib/ray/core/src/ray/raylet/raylet --x", 11, 1) == "raylet"
    assert role_of("python", "python -m ray.util.something", 12, 1) == "ray-other"
    assert role_of("kdamond.0", "", 13, 1) == "outside:kdamond.0"
    assert role_of("python", "python bench.py", 1, 1) == "loadgen+driver"
    # which Python program, by module or script
    assert role_of("python", "/v/bin/python -m serving.world publish /tmp/r", 14, 1) == "outside:python -m serving.world"
    assert role_of("python3", "python3 -u /x/y/train.py --a 1", 15, 1) == "outside:python3 train.py"
    assert role_of("python3", "python3", 16, 1) == "outside:python3"


def test_per_second_counts_requests_slow_ones_and_p99_by_due_time():
    sent = np.array([0.1, 0.5, 0.9, 1.2, 1.3, 2.7])
    lat = np.array([3.0, 4.0, 40.0, 5.0, 16.0, 2.0])
    by_s = per_second(sent, lat, 3.0)
    assert [b[:2] for b in by_s] == [[3, 1], [2, 1], [1, 0]]
    assert by_s[0][2] == round(float(np.percentile([3.0, 4.0, 40.0], 99)), 1) and by_s[2][2] == 2.0


def test_cpu_by_second_spreads_each_sample_over_the_seconds_it_covers():
    t0 = 1000.0
    samples = [{"t": 1001.0, "dt": 1.0, "cpu": {"Ingress": 0.6}, "sys": {"steal": 0.0, "idle": 1.0}},
               # a late sample covering [1001.0, 1002.5): 1.5 s of CPU, two thirds in second 1
               {"t": 1002.5, "dt": 1.5, "cpu": {"Ingress": 0.9, "raylet": 0.3}, "sys": {"steal": 0.15, "idle": 0.0}}]
    cpu = cpu_by_second(samples, t0, 3)
    assert cpu[0] == {"Ingress": 600.0, "steal": 0.0, "idle": 1000.0}
    assert cpu[1]["Ingress"] == 600.0 and cpu[1]["raylet"] == 200.0 and cpu[1]["steal"] == 100.0
    assert cpu[2]["Ingress"] == 300.0 and cpu[2]["raylet"] == 100.0


def test_worst_seconds_orders_by_slow_requests_and_gives_the_median_second():
    by_s = [[100, 0, 5.0], [100, 7, 30.0], [100, 2, 18.0], [100, 7, 45.0]]
    cpu = [{"Ingress": 500.0}, {"Ingress": 900.0}, {"Ingress": 600.0}, {"Ingress": 700.0, "raylet": 300.0}]
    w = worst_seconds(by_s, cpu, n=3)
    assert [x["second"] for x in w] == [3, 1, 2]  # ties on slow count broken by p99
    assert w[0]["cpu_ms"]["raylet"] == 300.0 and w[0]["median_cpu_ms"] == {"Ingress": 650.0, "raylet": 0.0}
    assert worst_seconds([[100, 0, 5.0]], [{}]) == []


def test_trace_sees_this_process_burn_a_core(tmp_path):
    with CpuTrace(tmp_path / "t.jsonl", interval=0.2) as tr:
        time.sleep(0.5)  # the sampler's first snapshot (psutil import) before the burn
        t0 = time.time()
        while time.time() - t0 < 1.0:
            pass
        time.sleep(0.3)
    samples = tr.read()
    assert samples and all(s["dt"] > 0 for s in samples)
    driver_ms = 1000 * sum(s["cpu"].get("loadgen+driver", 0.0) for s in samples)
    assert driver_ms > 400, driver_ms  # ~1 s of CPU on a quiet box; shared CI cores get less
    assert 1000 * sum(s["cpu"].get("cputrace", 0.0) for s in samples) < driver_ms
