#!/usr/bin/env python3
"""What one cgroup move costs on this host, with the cgroup2 option favordynmods off and on.

Moves a sleeping process into a fresh memory cgroup (v1 `memory` hierarchy when mounted, else
the cgroup2 root) and back, N times, with a pause between moves (the kernel's rwsem keeps its
fast mode for a while after a move, so back-to-back moves would measure the cached case), first
with the cgroup2 mount as it is, then with `favordynmods` added, then restores the mount's
options. Root only. Prints p50/max per mode in milliseconds.

    sudo scripts/cgroup-move-cost.py [N]       (default 20)
"""
import ctypes
import os
import statistics
import subprocess
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20
PAUSE_S = 0.3
libc = ctypes.CDLL(None, use_errno=True)
MS_REMOUNT = 32


def cgroup2():
    for line in open("/proc/self/mountinfo"):
        left, right = line.split(" - ", 1)
        f, r = left.split(), right.split()
        if r[0] == "cgroup2":
            flags = 0
            bits = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "sync": 16, "dirsync": 128,
                    "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21,
                    "strictatime": 1 << 24}
            for o in f[5].split(","):
                flags |= bits.get(o, 0)
            opts = [o for o in r[2].split(",") if o not in ("rw", "ro")]
            return f[4], flags, opts
    sys.exit("no cgroup2 mount")


def remount(point, flags, opts):
    if libc.mount(None, point.encode(), None, MS_REMOUNT | flags, ",".join(opts).encode()) != 0:
        sys.exit(f"remount failed: {os.strerror(ctypes.get_errno())}")


def measure(parent):
    child = os.path.join(parent, f"lah-move-cost-{os.getpid()}")
    os.makedirs(child, exist_ok=True)
    sleeper = subprocess.Popen(["sleep", "600"])
    took = []
    try:
        for _ in range(N):
            time.sleep(PAUSE_S)
            t = time.perf_counter()
            open(os.path.join(child, "cgroup.procs"), "w").write(str(sleeper.pid))
            took.append((time.perf_counter() - t) * 1e3)
            open(os.path.join(parent, "cgroup.procs"), "w").write(str(sleeper.pid))
    finally:
        sleeper.kill()
        sleeper.wait()
        time.sleep(0.1)
        os.rmdir(child)
    return took


def main():
    point, flags, opts = cgroup2()
    parent = "/sys/fs/cgroup/memory" if os.path.isdir("/sys/fs/cgroup/memory") else point
    base = [o for o in opts if o != "favordynmods"]
    try:
        for label, o in (("off", base), ("on", base + ["favordynmods"])):
            remount(point, flags, o)
            took = measure(parent)
            print(f"favordynmods {label}: {N} moves into {parent}: "
                  f"p50 {statistics.median(took):.2f} ms, max {max(took):.2f} ms")
    finally:
        remount(point, flags, opts)


if __name__ == "__main__":
    main()
