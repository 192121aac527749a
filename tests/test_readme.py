"""The README's examples run as printed (in a scratch directory with the default config)."""
import re
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A working directory holding a copy of config/default.toml, as the repo root does."""
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "default.toml", tmp_path / "config" / "default.toml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_example_runs(scratch, capsys):
    exec(compile(python_blocks()[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'bighash': {'state': 'on', 'pid': 1}" in out
    assert "'status': 'no writes yet since open'" in out and "'status': 'available'" in out


def test_readme_prometheus_example_runs(scratch, capsys):
    code = next(c for c in python_blocks() if "start_http_server" in c).replace("9464", str(free_port()))
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert 'flashcache_items{cache="default",tier="dram"} 1.0' in out


def test_every_readme_python_block_runs(scratch):
    blocks = python_blocks()
    assert len(blocks) >= 3
    for i, code in enumerate(blocks[1:], 2):      # a free port for any metrics endpoint
        exec(compile(code.replace("9464", str(free_port())), f"README.md python block {i}", "exec"), {})
