"""Servers for the server tests: `flashcache serve` in a subprocess on a small emulated
FDP SSD (and the real memcached, when installed, for byte-for-byte comparisons), on
loopback ports picked free. Every wait is bounded."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, port: int, metrics_port: int = 0, dram: str = "64MiB", extra: str = "",
                 server_extra: str = "") -> Path:
    path.write_text(f"""
[device]
kind = "emulated"
path = "dev.img"
size = "64MiB"
[device.emulator]
preset = "small-test"
[cache]
dram_size = "{dram}"
[cache.flash]
region_size = "2MiB"
{extra}
[server]
port = {port}
metrics_port = {metrics_port}
{server_extra}
[log]
level = "info"
""")
    return path


class ServerProc:
    """`flashcache serve` in a subprocess; ``stop()`` sends SIGTERM and returns its log."""

    def __init__(self, config: Path, port: int, metrics_port: int = 0):
        self.config = config
        self.port = port
        self.metrics_port = metrics_port
        self.log_path = config.with_suffix(".log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "ServerProc":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "flashcache.cli", "serve", "-c", str(self.config)],
                                     cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flashcache serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError(f"flashcache serve did not listen within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
        self._log.close()
        return rc


def start_server(tmp: Path, **kw) -> ServerProc:
    port = free_port()
    mport = free_port() if kw.pop("metrics", False) else 0
    cfg = write_config(tmp / "server.toml", port, mport, **kw)
    return ServerProc(cfg, port, mport).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One flashcache server per test module; its log must hold no traceback."""
    srv = start_server(tmp_path_factory.mktemp("server"), metrics=True)
    yield srv
    rc = srv.stop()
    log = srv.log()
    assert rc == 0, log
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def memcached():
    """The real memcached on a free loopback port (None when it is not installed)."""
    exe = shutil.which("memcached")
    if exe is None:
        yield None
        return
    port = free_port()
    args = [exe, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1"]
    if os.geteuid() == 0:
        args += ["-u", "root"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data``, half-close, and read until the server closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(1 << 16)
            except (socket.timeout, ConnectionResetError):
                break
            if not b:
                break
            out += b
        return out


def request(port: int, data: bytes, expect_end: bytes, timeout: float = 5.0, sock: socket.socket | None = None) -> bytes:
    """Send ``data`` on a connection and read until the reply ends with ``expect_end``."""
    own = sock is None
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while not out.endswith(expect_end) and time.monotonic() < deadline:
            b = s.recv(1 << 16)
            if not b:
                break
            out += b
        return out
    finally:
        if own:
            s.close()
