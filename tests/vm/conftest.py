"""The VM suite runs only inside tools/nvme-vm (via tools/run-vm-tests / make test-vm).

Outside the VM every test here is skipped with a message saying how to run it. Inside,
FLASHCACHE_VM names the VM's shape: "fdp" (512 B LBAs, small MDTS), "fdp4k" (4 KiB LBAs)
or "nofdp" (a namespace without FDP).
"""
import os

import pytest

VM = os.environ.get("FLASHCACHE_VM")
NS = "/dev/ng0n1"
CTRL = "/dev/nvme0"
BLOCK = "/dev/nvme0n1"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.vm)
            if not VM:
                item.add_marker(pytest.mark.skip(
                    reason="needs the NVMe test VM: run `make test-vm` (tools/run-vm-tests)"))
            elif not os.path.exists(NS):
                item.add_marker(pytest.mark.skip(reason=f"FLASHCACHE_VM={VM} but {NS} is missing"))


@pytest.fixture
def vm_kind():
    return VM


def fdp_only():
    return pytest.mark.skipif(VM == "nofdp", reason="this VM's namespace has no FDP (FLASHCACHE_VM=nofdp)")


def nofdp_only():
    return pytest.mark.skipif(VM != "nofdp", reason="needs the namespace without FDP (FLASHCACHE_VM=nofdp)")
