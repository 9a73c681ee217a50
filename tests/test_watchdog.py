"""pgjax.watchdog: a stalled stage ends the process with the stage's name; heartbeats keep it alive."""

import subprocess
import sys

from pgjax import watchdog

STALL = """
import time
from pgjax import watchdog
with watchdog.stage("outer work"):
    with watchdog.stage("artificial stall", timeout_s=1):
        time.sleep(30)
print("not reached")
"""

BEATS = """
import time
from pgjax import watchdog
with watchdog.stage("beating work", timeout_s=1) as st:
    for _ in range(8):
        time.sleep(0.4)
        st.beat()
    for _ in range(4):
        time.sleep(0.4)
        watchdog.beat()
with watchdog.stage("unwatched", timeout_s=0):
    time.sleep(1.5)
print("finished")
"""


def _run(code: str, env_extra: dict | None = None):
    import os

    env = {k: v for k, v in os.environ.items() if k != watchdog.ENV_VAR}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)


def test_stall_exits_nonzero_naming_the_stage():
    r = _run(STALL)
    assert r.returncode == watchdog.STALL_EXIT_CODE, r.stderr
    assert "stalled in stage 'artificial stall'" in r.stderr
    assert "most recent call first" in r.stderr  # faulthandler's dump of the thread stacks
    assert "not reached" not in r.stdout


def test_heartbeats_keep_the_stage_alive():
    r = _run(BEATS)
    assert r.returncode == 0, r.stderr
    assert "finished" in r.stdout and "stalled" not in r.stderr


def test_environment_variable_overrides_limits():
    code = "import time\nfrom pgjax import watchdog\nwith watchdog.stage('slow step', timeout_s={t}):\n    time.sleep(2.5)\nprint('finished')\n"
    narrowed = _run(code.format(t=60), {watchdog.ENV_VAR: "1"})  # the variable narrows a 60 s limit to 1 s
    assert narrowed.returncode == watchdog.STALL_EXIT_CODE and "'slow step'" in narrowed.stderr
    off = _run(code.format(t=1), {watchdog.ENV_VAR: "0"})  # 0 turns the watchdog off
    assert off.returncode == 0 and "finished" in off.stdout, off.stderr


def test_configured_timeout(monkeypatch):
    monkeypatch.delenv(watchdog.ENV_VAR, raising=False)
    assert watchdog.configured_timeout() == watchdog.DEFAULT_TIMEOUT_S
    assert watchdog.configured_timeout(5) == 5
    monkeypatch.setenv(watchdog.ENV_VAR, "7.5")
    assert watchdog.configured_timeout(5) == 7.5
    monkeypatch.setenv(watchdog.ENV_VAR, "soon")
    try:
        watchdog.configured_timeout()
    except ValueError as e:
        assert watchdog.ENV_VAR in str(e)
    else:
        raise AssertionError("a bad PGJAX_STALL_TIMEOUT_S must be refused")
