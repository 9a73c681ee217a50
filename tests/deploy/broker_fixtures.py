"""Fixtures of the broker tests: a real Mosquitto on a free port of 127.0.0.1 (imported by name, as
`deploy_fixtures`). `broker(reads=None, tls=False)` starts one: with `reads` (agent -> agents it
reads) it has the password file and ACL of `pgjax deploy --write-acl`, without it anyone may connect;
every broker started is stopped at the end of the test."""

from __future__ import annotations

import shutil

import pytest

from pgjax.deploy.broker import Mosquitto, conf_text, free_port, make_test_certificates, write_security
from pgjax.runio import write_atomic

needs_mosquitto = pytest.mark.skipif(shutil.which("mosquitto") is None and not shutil.os.path.exists(
    "/usr/sbin/mosquitto"), reason="Mosquitto is not installed (apt-get install mosquitto; .ci/run does)")


class Started:
    def __init__(self, proc: Mosquitto, url: str, files=None, tls=None):
        self.proc, self.url, self.files, self.tls = proc, url, files, tls

    def password(self, agent: str) -> str:
        return self.files.secrets[agent].read_text().strip()


@pytest.fixture
def broker(tmp_path):
    started = []

    def start(reads=None, tls=False, site="t", protocol="p2p_trading"):
        port = free_port()
        folder = tmp_path / f"broker{len(started)}"
        folder.mkdir()
        certs = make_test_certificates(folder / "certs") if tls else None
        if reads is None:
            conf = folder / "mosquitto.conf"
            write_atomic(conf, conf_text(port, None, None, tls=certs))
            files = None
        else:
            files = write_security(folder, site, protocol, reads, port, tls=certs)
            conf = files.conf
        proc = Mosquitto(conf, port, log_path=folder / "mosquitto.log").start()
        started.append(proc)
        return Started(proc, f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{port}", files, certs)

    yield start
    for proc in started:
        proc.stop()
