"""The README's example runs as printed (in a scratch directory with the default config)."""
import re
import shutil
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _examples():
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def _run(code, tmp_path, monkeypatch):
    (tmp_path / "config").mkdir(exist_ok=True)
    shutil.copy(ROOT / "config" / "default.toml", tmp_path / "config" / "default.toml")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    _run(_examples()[0], tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert "'bighash': {'state': 'on', 'pid': 1}" in out
    assert "'status': 'no writes yet since open'" in out and "'status': 'available'" in out


def test_readme_prometheus_example_runs(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:             # a free port instead of the example's 9464
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = next(c for c in _examples() if "start_http_server" in c).replace("9464", str(port))
    _run(code, tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert 'flashcache_items{cache="default",tier="dram"} 1.0' in out
