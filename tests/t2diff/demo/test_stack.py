"""Child supervision: readiness, death detection, and that stopping reaches grandchildren too."""
from __future__ import annotations

import os
import sys
import time

import pytest

from t2diff.demo.stack import ChildDied, Stack

# A parent that spawns a grandchild, writes the grandchild's pid, then sleeps (ignoring nothing special).
PARENT = """
import subprocess, sys, time, pathlib
g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
pathlib.Path(sys.argv[1]).write_text(str(g.pid))
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_stop_all_reaches_grandchildren(tmp_path):
    pidfile = tmp_path / "g.pid"
    with Stack(tmp_path / "logs") as st:
        c = st.start("parent", [sys.executable, "-c", PARENT, str(pidfile)], ready=pidfile.exists, timeout_s=30)
        gpid = int(pidfile.read_text())
        assert c.alive() and _alive(gpid)
        st.check()
    assert not c.alive()
    for _ in range(50):
        if not _alive(gpid):
            break
        time.sleep(0.1)
    assert not _alive(gpid)


def test_death_is_reported(tmp_path):
    with Stack(tmp_path / "logs") as st:
        with pytest.raises(ChildDied, match="boom"):
            st.start("dies", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], ready=lambda: False,
                     timeout_s=30)
        st.start("short", [sys.executable, "-c", "pass"])
        time.sleep(1.0)
        with pytest.raises(ChildDied):
            st.check()
        assert st.run("oneshot", [sys.executable, "-c", "raise SystemExit(0)"], timeout_s=30) == 0


DRIVER = """
import signal, sys, time, pathlib
from t2diff.demo.stack import Stack
# what an interactive `t2diff demo` has: a test run launched in the background (`cmd &`) starts every child with
# SIGINT ignored, and Python then installs no KeyboardInterrupt handler
signal.signal(signal.SIGINT, signal.default_int_handler)
with Stack(pathlib.Path(sys.argv[1])) as st:
    c = st.start("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"])
    pathlib.Path(sys.argv[2]).write_text(str(c.proc.pid))
    time.sleep(120)
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_stop_children(tmp_path, sig):
    import signal
    import subprocess

    pidfile = tmp_path / "child.pid"
    drv = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path / "logs"), str(pidfile)])
    for _ in range(300):
        if pidfile.exists() and pidfile.read_text():
            break
        time.sleep(0.1)
    child = int(pidfile.read_text())
    assert _alive(child)
    drv.send_signal(getattr(signal, sig))
    drv.wait(timeout=60)
    for _ in range(100):
        if not _alive(child):
            break
        time.sleep(0.1)
    assert not _alive(child)
