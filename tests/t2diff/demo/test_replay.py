"""The demo's arm forcing against the serving app's real A/B router (no Ray): the arms file it writes must be
accepted by the router and route every user to the arm asked for, and switch when rewritten."""
from __future__ import annotations

import time

from t2diff.demo.replay import RecallClient


def test_arms_file_forces_the_router(tmp_path):
    from serving.ab import ABRouter
    from serving.settings import ExperimentConfig

    arms = [{"name": "treatment", "source": "t2diff", "weight": 1.0},
            {"name": "control", "source": "sasrec", "weight": 1.0}]
    f = tmp_path / "arms.yaml"
    c = RecallClient("http://127.0.0.1:9", arms, {"name": "demo", "salt": "s"}, f)
    c._force("control")
    router = ABRouter(ExperimentConfig(name="demo", salt="s", arms=arms), arms_file=f, reload_s=0.01)
    assert {router.assign(u).name for u in range(300)} == {"control"}
    time.sleep(0.05)  # a new mtime
    c._force("treatment")
    time.sleep(0.05)
    assert {router.assign(u).name for u in range(300)} == {"treatment"}
    c.close()
