"""The MQTT broker of a deployment: Mosquitto's configuration, password file and ACL, written by pgjax.

    files = write_security("broker/", site="mmg", agents={"MG1": ["MG2", "MG3"], ...})  # pgjax deploy --write-acl
    broker = Mosquitto(files.conf).start()            # what `mosquitto -c broker/mosquitto.conf` runs
    ...
    broker.stop()

Topics are `pgjax/<site>/<protocol>/<agent>` (`topic`): every agent publishes only under its
own name and reads only the topics of the agents its protocol lets it hear (`reads`: its
peers on the protocol's graph, its parent, ...), plus the site's control topics
(`pgjax/<site>/ctl/<agent>`: lock-step acknowledgements and the clock). The ACL says exactly
that per user (user name = agent name); the password file holds one generated password per
agent (`mosquitto_passwd`), handed to each agent in `<agent>.secret` (mode 0600). Anonymous
clients are refused. `tls=True` adds a TLS listener with the given certificate and key
(`make_test_certificates` makes a CA and a server certificate with `openssl`, for tests).

Everything the user keeps (configuration, ACL, passwords) is written atomically.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from pgjax.errors import DataError
from pgjax.runio import write_atomic

CONTROL = "ctl"  # the protocol part of the site's control topics (lock-step acks, clock)


def topic(site: str, protocol: str, agent: str) -> str:
    """The topic agent `agent` publishes its `protocol` messages on."""
    return f"pgjax/{site}/{protocol}/{agent}"


def parse_url(url: str) -> tuple[str, int, bool]:
    """`mqtt://HOST:PORT` (or `mqtts://` for TLS) -> `(host, port, tls)`; a `DataError` names a bad one."""
    scheme, sep, rest = url.partition("://")
    host, _, port = rest.rpartition(":")
    if not sep or scheme not in ("mqtt", "mqtts") or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DataError(f"--broker {url!r}: expected mqtt://HOST:PORT or mqtts://HOST:PORT (TLS)")
    return host, int(port), scheme == "mqtts"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (bound to port 0, then released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def acl_text(site: str, protocol: str, reads: dict) -> str:
    """Mosquitto ACL: each agent (user) writes only its own topics, reads those of `reads[agent]`."""
    lines = [f"# pgjax deploy --write-acl: site {site}, protocol {protocol}", ""]
    for agent, peers in reads.items():
        lines += [f"user {agent}", f"topic write {topic(site, protocol, agent)}",
                  f"topic write {topic(site, CONTROL, agent)}", f"topic read {topic(site, CONTROL, '+')}"]
        lines += [f"topic read {topic(site, protocol, p)}" for p in peers if p != agent]
        lines.append("")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class SecurityFiles:
    conf: Path  # mosquitto.conf
    acl: Path
    passwords: Path
    secrets: dict  # agent -> path of its password file


def conf_text(port: int, acl: Path | None, passwords: Path | None, host: str = "127.0.0.1",
              tls: dict | None = None, persistence: Path | None = None, user: str | None = None,
              nodelay: bool = True) -> str:
    """mosquitto.conf of one listener (TLS when `tls` has `cafile`, `certfile`, `keyfile`); without an ACL
    and password file it lets anyone in (local tests and benchmarks only). The broker runs as `user`
    (default: the one writing the files, who can read the 0600 password file; started as root,
    Mosquitto would otherwise switch to the `mosquitto` user). `nodelay`: Nagle's algorithm off
    (`set_tcp_nodelay`), as the agents' `Bus`."""
    import getpass

    auth = ["allow_anonymous true"] if acl is None else \
        ["allow_anonymous false", f"password_file {passwords}", f"acl_file {acl}"]
    lines = [f"user {user or getpass.getuser()}", "per_listener_settings false", *auth, f"listener {port} {host}", "max_queued_messages 100000",
             "max_inflight_messages 1000", "log_dest stderr", "log_type error", "log_type warning"]
    if nodelay:
        lines.append("set_tcp_nodelay true")
    if tls:
        lines += [f"cafile {tls['cafile']}", f"certfile {tls['certfile']}", f"keyfile {tls['keyfile']}",
                  "tls_version tlsv1.2"]
    if persistence is not None:
        lines += ["persistence true", f"persistence_location {persistence}/"]
    return "\n".join(lines) + "\n"


def _passwd_binary() -> str:
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        raise DataError("mosquitto_passwd not found: install the broker (Debian: apt-get install mosquitto)")
    return exe


def write_security(folder, site: str, protocol: str, reads: dict, port: int, host: str = "127.0.0.1",
                   tls: dict | None = None) -> SecurityFiles:
    """ACL, password file (one generated password per agent) and mosquitto.conf in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    acl, passwords = folder / "acl", folder / "passwords"
    write_atomic(acl, acl_text(site, protocol, reads))
    plain = {agent: secrets.token_urlsafe(18) for agent in reads}
    tmp = folder / ".passwords.tmp"
    write_atomic(tmp, "".join(f"{a}:{p}\n" for a, p in plain.items()))
    os.chmod(tmp, 0o600)
    subprocess.run([_passwd_binary(), "-U", str(tmp)], check=True, capture_output=True)
    os.replace(tmp, passwords)
    secret_paths = {}
    for agent, pw in plain.items():
        secret_paths[agent] = folder / f"{agent}.secret"
        write_atomic(secret_paths[agent], pw + "\n")
        os.chmod(secret_paths[agent], 0o600)
    conf = folder / "mosquitto.conf"
    write_atomic(conf, conf_text(port, acl.resolve(), passwords.resolve(), host, tls))
    return SecurityFiles(conf, acl, passwords, secret_paths)


def make_test_certificates(folder) -> dict:
    """A CA and a server certificate for 127.0.0.1 / localhost, made with `openssl` (tests only):
    `{cafile, certfile, keyfile}`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pgjax test CA",
        "-keyout", str(ca_key), "-out", str(ca))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr))
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
        "-extfile", str(ext), "-out", str(cert))
    return {"cafile": str(ca), "certfile": str(cert), "keyfile": str(key)}


class Mosquitto:
    """A Mosquitto broker process on a configuration file (`start`, `stop`, `restart`)."""

    def __init__(self, conf, port: int, host: str = "127.0.0.1", log_path=None):
        self.conf, self.port, self.host = Path(conf), int(port), host
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if exe is None:
            raise DataError("mosquitto not found: install the broker (Debian: apt-get install mosquitto)")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DataError(f"mosquitto -c {self.conf} exited with {self.proc.returncode}"
                                + (f" (see {self.log_path})" if self.log_path else ""))
            try:
                socket.create_connection((self.host, self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise DataError(f"mosquitto -c {self.conf}: nothing listens on {self.host}:{self.port} after {timeout_s} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()
