"""`make test-slow` runs the long suites: its pytest command, as the Makefile spells it,
collects the slow-marked tests (the WAF acceptance runs, the long fuzz and thread runs),
and only those. A change to the markers or to pytest's addopts that left it collecting
nothing (as it once did) fails here, in `make test`."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def recipe(target: str) -> list[str]:
    """The pytest arguments of a Makefile target's recipe ($(PY) -m pytest ...)."""
    text = (ROOT / "Makefile").read_text()
    m = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, re.M)
    assert m, f"Makefile has no {target} target"
    for line in m.group(1).splitlines():
        if "-m pytest" in line:
            return shlex.split(line.split("-m pytest", 1)[1])
    raise AssertionError(f"Makefile: {target} runs no pytest")


def collected(args: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", *args, "--collect-only", "-p", "no:cacheprovider"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return [ln for ln in out.stdout.splitlines() if "::" in ln]


def test_make_test_slow_collects_the_long_suites_and_only_slow_ones():
    slow = collected(recipe("test-slow"))
    files = {t.split("::")[0] for t in slow}
    assert len(slow) >= 8, slow
    assert {"tests/waf/test_acceptance.py", "tests/test_cache_fuzz.py", "tests/test_threads.py"} <= files, files
    default = set(collected(recipe("test")))
    assert default and not default & set(slow), "a slow test also runs in make test"
