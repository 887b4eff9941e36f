import sqlite3
import subprocess
import sys
import textwrap

import pytest

from streaming.local_log import LocalEventLog
from streaming.log import open_event_log, partition_for
from streaming.settings import StreamSettings


def test_append_only_and_partition_count_is_fixed(tmp_path):
    log = LocalEventLog(tmp_path, partitions=3, linger_ms=0)
    log.produce("events", b"7", b"x")
    log.close()
    con = sqlite3.connect(tmp_path / "events.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE records SET value = x'00'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM records")
    con.close()
    again = LocalEventLog(tmp_path, partitions=8)
    assert again.partitions_for("events") == 3  # kept from creation, so keys stay on their partition
    again.close()


def test_buffered_until_flush_then_durable_for_another_process(tmp_path):
    log = LocalEventLog(tmp_path, partitions=2, linger_ms=60_000)
    log.produce("events", b"1", b"a")
    c = log.consumer("events", "g")
    assert c.poll(10, 0.0) == []  # not flushed yet
    log.flush()
    assert [r.value for r in c.poll(10, 0.0)] == [b"a"]
    c.commit()
    code = textwrap.dedent(f"""
        from streaming.local_log import LocalEventLog
        log = LocalEventLog({str(tmp_path)!r}, partitions=2)
        c = log.consumer("events", "g")
        assert c.poll(10, 0.0) == [], "committed record delivered again"
        c.seek({partition_for(b"1", 2)}, 0)
        print(c.poll(10, 0.0)[0].value.decode())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "a"


def test_two_processes_appending_get_distinct_offsets(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from streaming.local_log import LocalEventLog
        log = LocalEventLog({str(tmp_path)!r}, partitions=1, linger_ms=0)
        for i in range(300):
            log.produce("events", b"k", (sys.argv[1] + str(i)).encode())
        log.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, tag]) for tag in ("a", "b")]
    assert all(p.wait(60) == 0 for p in procs)
    log = LocalEventLog(tmp_path, partitions=1)
    c = log.consumer("events", "g")
    recs = []
    while got := c.poll(1000, 0.0):
        recs += got
    assert [r.offset for r in recs] == list(range(600))
    assert sorted(r.value for r in recs) == sorted(f"{t}{i}".encode() for t in "ab" for i in range(300))


def test_background_flush_after_linger(tmp_path):
    log = LocalEventLog(tmp_path, partitions=1, linger_ms=20)
    log.produce("events", b"k", b"v")
    c = log.consumer("events", "g")
    assert [r.value for r in c.poll(10, timeout_s=5.0)] == [b"v"]  # delivered without an explicit flush
    log.close()


def test_open_event_log_uses_runs_dir_by_default(tmp_path):
    log = open_event_log(StreamSettings())
    log.produce("events", b"1", b"v")
    log.close()
    assert list((tmp_path / "runs" / "eventlog").glob("events.sqlite"))


def test_consumer_rejects_foreign_partitions(tmp_path):
    log = LocalEventLog(tmp_path, partitions=2)
    with pytest.raises(ValueError):
        log.consumer("events", "g", partitions=[5])
    c = log.consumer("events", "g", partitions=[0])
    with pytest.raises(ValueError):
        c.seek(1, 0)
    log.close()
