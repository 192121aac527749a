"""The other process of tests/devices/test_ownership.py (started fresh, not forked).

``owner_child.py try KIND PATH``: open the device, print one JSON line (``{"opened":
true}`` or the error's type, message and pids), close it. ``owner_child.py hold KIND
PATH``: open it, print "ready", close it when a line arrives on stdin, print "closed".
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.devices.test_ownership import open_kind  # noqa: E402


def main() -> None:
    mode, kind, path = sys.argv[1:4]
    if mode == "try":
        try:
            dev = open_kind(kind, path)
        except Exception as e:                       # noqa: BLE001 - the answer is the error
            print(json.dumps({"error": type(e).__name__, "message": str(e),
                              "pids": list(getattr(e, "pids", ()))}), flush=True)
            return
        dev.close()
        print(json.dumps({"opened": True}), flush=True)
        return
    dev = open_kind(kind, path)
    print("ready", flush=True)
    sys.stdin.readline()
    dev.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
