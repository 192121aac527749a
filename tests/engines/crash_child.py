"""The child of tests/engines/test_crash.py: a write-heavy workload on the router until it is
killed. Before each operation it logs "B seq op key" and after it "A seq", unbuffered, so
the parent knows what was acknowledged and what was in flight."""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from engines.device import run  # noqa: E402
from engines.navy import Navy  # noqa: E402
from flashcache.devices.file import FileDevice  # noqa: E402

MIB = 1 << 20


def open_navy(dev):
    return Navy(dev, region_size=MIB, bighash_fraction=0.2, small_item_max=1024)


def value(key: bytes, seq: int, size: int) -> bytes:
    head = b"%s|%d|" % (key, seq)
    return head + b"#" * max(0, size - len(head))


def main():
    path, logpath, seq, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rnd = random.Random(seed)
    dev = FileDevice(path, 16 * MIB)
    nv = open_navy(dev)
    fd = os.open(logpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, b"S %s\n" % nv.start.encode())
    while True:
        seq += 1
        key = b"k%d" % rnd.randrange(150)
        if rnd.random() < 0.1:
            os.write(fd, b"B %d R %s\n" % (seq, key))
            run(nv.remove(key), dev)
        else:
            size = rnd.choice([40, 300, 900, 3000, 60_000, 200_000])
            os.write(fd, b"B %d S %s %d\n" % (seq, key, size))
            run(nv.insert(key, value(key, seq, size)), dev)
        os.write(fd, b"A %d\n" % seq)


if __name__ == "__main__":
    main()
