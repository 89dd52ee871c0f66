"""Soak: many tiny iterations in one process; resource use must stay flat (issue 16).

    make soak                      # 50 iterations of the tiny model
    .venv/bin/python bench/soak.py --iterations 50 --at 1,10,25,50

One `stepcoder` flow run per iteration, all in this process (as a long-lived worker serving a schedule would),
on the tiny model. At the chosen iterations it prints the process's RSS, open file descriptors, threads and
live child processes. "Flat" (the verdict line): from the first sample after warm-up (iteration 10) to the last,
RSS grows by less than 10 % and less than 100 MB, and fds, threads and children grow by at most 2 each.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def sample() -> dict:
    status = Path("/proc/self/status").read_text()
    rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    threads = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))
    me = os.getpid()
    children = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children += int(fields[1]) == me  # ppid
    return {"rss_mb": rss_kb / 1024, "fds": len(os.listdir("/proc/self/fd")), "threads": threads,
            "children": children}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--at", default="1,10,25,50")
    args = ap.parse_args()
    at = sorted({int(x) for x in args.at.split(",") if int(x) <= args.iterations} | {args.iterations})
    from flows.stepcoder_flow import stepcoder

    root = Path(tempfile.mkdtemp(prefix="stepcoder-soak-"))
    overrides = [f"store={root / 'store'}", f"checkpoint_dir={root / 'ckpt'}", "data.limit=8",
                 "ppo.keep_checkpoints=1"]
    rows, t0 = [], time.time()
    for it in range(1, args.iterations + 1):
        stepcoder(run_name="soak", config_path="infra/configs/tiny.yaml", overrides=overrides, iterations=1)
        if it in at:
            rows.append({"iteration": it, **sample(), "elapsed_s": time.time() - t0})
            print(f"[soak] iteration {it}: {rows[-1]}", flush=True)
    print(f"\n{'iteration':>9} {'RSS MB':>8} {'fds':>5} {'threads':>7} {'children':>8} {'elapsed s':>9}")
    for r in rows:
        print(f"{r['iteration']:>9} {r['rss_mb']:>8.0f} {r['fds']:>5} {r['threads']:>7} {r['children']:>8} "
              f"{r['elapsed_s']:>9.0f}")
    base = next((r for r in rows if r["iteration"] >= 10), rows[0])
    last = rows[-1]
    growth = last["rss_mb"] - base["rss_mb"]
    flat = (growth < 0.10 * base["rss_mb"] and growth < 100
            and all(last[k] - base[k] <= 2 for k in ("fds", "threads", "children")))
    print(f"\nfrom iteration {base['iteration']} to {last['iteration']}: RSS {growth:+.0f} MB "
          f"({growth / base['rss_mb']:+.1%}), fds {last['fds'] - base['fds']:+d}, threads "
          f"{last['threads'] - base['threads']:+d}, children {last['children'] - base['children']:+d}: "
          f"{'FLAT' if flat else 'NOT FLAT'} (bar: RSS < +10 % and < +100 MB; fds, threads, children <= +2)")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
