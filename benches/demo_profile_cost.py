#!/usr/bin/env python3
"""What profile requests cost the demo service, as a user sees it.

Starts the demo binary on a free port, lets it run WARMUP seconds, then asks
for /debug/pprof/heap.svg, heap and allocs (the first of each, then three
more rounds) and prints for each request: its time, the live heap before,
the highest seen during it and after it (GET /gc polled every few
milliseconds), resident memory before and after (/proc/PID/statm) and the
collection cycles that ran during it, with the live bytes before each.

    cargo build --release && python3 benches/demo_profile_cost.py target/release/allocscope-demo
    CARGO_PROFILE_RELEASE_DEBUG=false cargo build --release --target-dir target/nodebug
    python3 benches/demo_profile_cost.py target/nodebug/release/allocscope-demo

usage: demo_profile_cost.py DEMO_BINARY [WARMUP_SECONDS] [PATH ...]
(docs/measurements.md, "Capturing a profile")
"""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

binary = os.path.abspath(sys.argv[1])
warmup = float(sys.argv[2]) if len(sys.argv) > 2 else 5
kinds = ["/debug/pprof/heap.svg", "/debug/pprof/heap", "/debug/pprof/allocs"]
paths = sys.argv[3:] or kinds * 4
env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOCSCOPE_")}
env.update({"ALLOCSCOPE_ADDR": "127.0.0.1:0", "ALLOCSCOPE_LOG_INTERVAL": "0",
            "ALLOCSCOPE_DEMO_SECONDS": "300"})
demo = subprocess.Popen([binary], env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, text=True, cwd="/tmp")
url = None
for line in demo.stdout:
    if "landing page:" in line:
        url = line.split("landing page:")[1].strip().rstrip("/")
        break
if url is None:
    sys.exit("the demo printed no URL")
threading.Thread(target=lambda: [None for _ in demo.stdout], daemon=True).start()
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20


def rss():
    with open(f"/proc/{demo.pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def get(path):
    with urllib.request.urlopen(url + path, timeout=120) as r:
        return r.read()


def gc():
    return json.loads(get("/gc"))


peak = [0]
watching = [False]


def watch():
    while watching[0]:
        try:
            peak[0] = max(peak[0], gc()["live_bytes"])
        except OSError:
            pass
        time.sleep(0.003)


try:
    time.sleep(warmup)
    g = gc()
    print(f"before any view: live {g['live_bytes'] / MIB:.2f} MiB, "
          f"RSS {rss() / MIB:.1f} MiB, cycles {g['cycles']}")
    for path in paths:
        g0, r0 = gc(), rss()
        seen = max([0] + [c["number"] for c in g0["last_cycles"]])
        peak[0] = g0["live_bytes"]
        watching[0] = True
        w = threading.Thread(target=watch)
        w.start()
        time.sleep(0.05)
        t = time.time()
        body = get(path)
        dt = time.time() - t
        time.sleep(0.05)
        watching[0] = False
        w.join()
        g1, r1 = gc(), rss()
        new = [c for c in g1["last_cycles"] if c["number"] > seen]
        cycles = ", ".join(f"{c['reason']} at {c['live_bytes_before'] / MIB:.1f} MiB"
                           for c in new)
        print(f"{path:24} {dt * 1000:6.0f} ms {len(body):7} bytes; live "
              f"{g0['live_bytes'] / MIB:.2f} -> peak {peak[0] / MIB:.2f} (+"
              f"{(peak[0] - g0['live_bytes']) / MIB:.2f}) -> {g1['live_bytes'] / MIB:.2f} MiB; "
              f"RSS {r0 / MIB:.1f} -> {r1 / MIB:.1f} MiB; cycles {len(new)} [{cycles}]")
        time.sleep(0.5)
    g = gc()
    print(f"after: live {g['live_bytes'] / MIB:.2f} MiB, RSS {rss() / MIB:.1f} MiB, "
          f"cycles {g['cycles']}")
finally:
    demo.kill()
    demo.wait()
