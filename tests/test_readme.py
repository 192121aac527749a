"""The README's example runs as printed (in a scratch directory with the default config)."""
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    code = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "default.toml", tmp_path / "config" / "default.toml")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'bighash': {'state': 'on', 'pid': 1}" in out and "'status': 'available'" in out
