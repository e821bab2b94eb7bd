#!/usr/bin/env bash
# The service benchmark (docs/measurements.md, "A real service, side by
# side"): the axum service of benches/service compiled once per global
# allocator, compared on
#   1. instructions per request of the tokio worker under callgrind (the
#      figure to gate on: noise-free), and of the whole process;
#   2. throughput and p99 latency under wrk, in rounds whose order rotates,
#      as per-round ratios (median and range);
#   3. resident memory (VmRSS) right after each wrk run;
#   4. what each heap profiler's profile shows in `go tool pprof -top` with
#      no binary at hand: the two handlers' share of the allocated bytes
#      against the exact shares (svc_exact, allocscope::measure).
#
# Usage: benches/service.sh [--quick] [--rounds N] [--seconds S]
#        [--requests N] [--skip-build] [--only callgrind,wrk,profiles]
# Full run about 10 minutes after the build, --quick about 3. Needs valgrind,
# wrk, curl and go (`go tool pprof`); everything listens on 127.0.0.1 only.
#
# Build: the `service` profile of the root Cargo.toml (thin LTO, one codegen
# unit) with RUSTFLAGS="" so that .cargo/config.toml's
# `-C force-frame-pointers=yes` does not apply (RUSTFLAGS, when set, even
# empty, replaces build.rustflags). CARGO_TARGET_DIR is honoured. Results
# and raw outputs go to target/service-bench/ (SVC_OUT to change).
set -euo pipefail
cd "$(dirname "$0")/.."
skip_build=0
for a in "$@"; do [ "$a" = --skip-build ] && skip_build=1; done
if [ $skip_build = 0 ]; then
  echo "== build: RUSTFLAGS=\"\" cargo build --profile service -p allocscope-service-bench"
  RUSTFLAGS="" cargo build --profile service -p allocscope-service-bench
fi
exec python3 - "$@" <<'PY'
import argparse, gzip, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true")
ap.add_argument("--rounds", type=int)
ap.add_argument("--seconds", type=int, help="wrk duration per run")
ap.add_argument("--requests", type=int, help="N for callgrind (N and 2N requests)")
ap.add_argument("--profile-requests", type=int)
ap.add_argument("--skip-build", action="store_true")
ap.add_argument("--only", default="callgrind,wrk,profiles")
a = ap.parse_args()
rounds = a.rounds or (3 if a.quick else 7)
seconds = a.seconds or (3 if a.quick else 6)
cg_n = a.requests or (100 if a.quick else 500)
prof_n = a.profile_requests or (16000 if a.quick else 40000)
phases = set(a.only.split(","))

target = os.environ.get("CARGO_TARGET_DIR", "target")
B = os.path.join(target, "service")
OUT = os.environ.get("SVC_OUT", os.path.join(target, "service-bench"))
os.makedirs(OUT, exist_ok=True)
for tool in ["wrk", "valgrind", "curl", "go"]:
    if shutil.which(tool) is None:
        sys.exit(f"{tool} is needed")

# (binary, label, the allocator it wraps or adds to, has the allocscope exporter)
ALLOCS = [
    ("svc_system", "System (glibc malloc)", None, False),
    ("svc_allocscope", "allocscope (System)", "svc_system", True),
    ("svc_mimalloc", "mimalloc", None, False),
    ("svc_allocscope_mimalloc", "allocscope<MiMalloc>", "svc_mimalloc", True),
    ("svc_jemalloc", "jemalloc (tikv-jemallocator)", None, False),
    ("svc_jemalloc_prof", "jemalloc + profiler at 512 KiB (jemalloc_pprof)", "svc_jemalloc", False),
    ("svc_pprof_alloc", "pprof-alloc (System)", "svc_system", False),
]
NAMES = [x[0] for x in ALLOCS]
INNER = {x[0]: x[2] for x in ALLOCS}
LABEL = {x[0]: x[1] for x in ALLOCS}
EXPORTER = {x[0]: x[3] for x in ALLOCS}

def log(*m):
    print(*m, flush=True)

class Service:
    """One service process; `prefix` runs it under a tool (valgrind)."""
    def __init__(self, exe, prefix=(), env=None, tag="run"):
        self.logf = os.path.join(OUT, f"{os.path.basename(exe)}.{tag}.log")
        e = dict(os.environ, SVC_ADDR="127.0.0.1:0", ALLOCSCOPE_ADDR="127.0.0.1:0")
        e.update(env or {})
        self.out = open(self.logf, "w")
        self.p = subprocess.Popen([*prefix, exe], stdout=self.out, stderr=subprocess.STDOUT, env=e)
        self.addr = self.exporter = None
        deadline = time.time() + 120
        while time.time() < deadline:
            txt = open(self.logf).read()
            m = re.search(r"^service=http://(\S+)", txt, re.M)
            if m:
                self.addr = m[1]
                x = re.search(r"^exporter=(\S+)", txt, re.M)
                self.exporter = x[1].rstrip("/") if x else None
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        sys.exit(f"{exe} did not start: see {self.logf}\n{open(self.logf).read()[-2000:]}")

    def rss_kib(self):
        """(VmRSS, RssAnon) in KiB."""
        f = dict(l.split()[:2] for l in open(f"/proc/{self.p.pid}/status") if l.startswith(("VmRSS:", "RssAnon:")))
        return int(f["VmRSS:"]), int(f["RssAnon:"])

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.out.close()

class Scraper:
    """GET /metrics on the exporter once a second, as Prometheus would."""
    def __init__(self, url):
        self.url, self.stop_ev, self.n = url + "/metrics", threading.Event(), 0
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()
    def run(self):
        while not self.stop_ev.wait(1.0):
            try:
                urllib.request.urlopen(self.url, timeout=10).read()
                self.n += 1
            except Exception as e:
                log("scrape failed:", e)
    def stop(self):
        self.stop_ev.set()
        self.t.join()

def load(addr, count, conns=1, start=0):
    subprocess.run([os.path.join(B, "svc_load"), addr, str(count), str(conns), str(start)],
                   check=True, capture_output=True, text=True)

def fmt_range(xs, f="{:.2f}"):
    return f"{f.format(statistics.median(xs))}x ({f.format(min(xs))}–{f.format(max(xs))})"

results = {n: {} for n in NAMES}
if a.only != "callgrind,wrk,profiles" and os.path.exists(os.path.join(OUT, "results.json")):
    # a part run again: the others' figures from the last run, for the table
    results = json.load(open(os.path.join(OUT, "results.json")))
    for name in NAMES:
        for k in [k for k in results.get(name, {}) if k.startswith(("ir_", "cg_")) and "callgrind" in phases
                  or k in ("rps", "p99", "rss", "anon", "rps_sys", "rps_inner", "p99_inner") and "wrk" in phases
                  or k == "profile" and "profiles" in phases]:
            del results[name][k]

def save():
    """Everything measured so far, for a crash or a later look."""
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(results, f, indent=1)

# ---- 1. instructions per request under callgrind
def callgrind(name, n):
    d = tempfile.mkdtemp(prefix=f"cg-{name}-{n}-", dir=OUT)
    prefix = ["setarch", "-R", "valgrind", "--tool=callgrind", "--separate-threads=yes",
              f"--callgrind-out-file={d}/callgrind.out"]
    # one tokio worker, one client connection: every request on one thread
    # a cache of 64 is full after the first 128 requests: its teardown at exit
    # costs the same after N requests as after 2N, and cancels
    s = Service(os.path.join(B, name), prefix, {"TOKIO_WORKER_THREADS": "1", "SVC_CACHE_MAX": "64"},
                tag=f"cg{n}")
    sc = Scraper(s.exporter) if s.exporter else None
    load(s.addr, n)
    if sc:
        sc.stop()
    s.stop()
    per_thread = {}
    for f in os.listdir(d):
        txt = open(os.path.join(d, f)).read()
        m = re.search(r"^(?:summary|totals): (\d+)", txt, re.M)
        if m:
            per_thread[f.rsplit("-", 1)[-1]] = (int(m[1]), os.path.join(d, f))
    return per_thread

if "callgrind" in phases:
    log(f"== callgrind: {cg_n} and {2 * cg_n} requests per allocator, TOKIO_WORKER_THREADS=1, one connection")
    for name in NAMES:
        t0 = time.time()
        t1, t2 = callgrind(name, cg_n), callgrind(name, 2 * cg_n)
        # the worker: the thread (numbered alike in both runs) whose count grew most
        w = max(t2, key=lambda t: t2[t][0] - t1.get(t, (0,))[0])
        f2 = t2[w][1]
        results[name]["ir_worker"] = (t2[w][0] - t1[w][0]) / cg_n
        results[name]["ir_all"] = (sum(x[0] for x in t2.values()) - sum(x[0] for x in t1.values())) / cg_n
        results[name]["cg_file"] = f2
        log(f"{name}: worker {results[name]['ir_worker']:,.0f} instructions/request, "
            f"all threads {results[name]['ir_all']:,.0f} ({time.time() - t0:.0f} s; {f2})")

    save()

# ---- 2 and 3. wrk rounds, rotated; VmRSS after each run
script = os.path.join(OUT, "requests.lua")
with open(script, "w") as f:
    f.write(subprocess.run([os.path.join(B, "svc_load"), "--wrk-script"], check=True,
                           capture_output=True, text=True).stdout)

def to_ms(v, unit):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

def wrk_run(name):
    s = Service(os.path.join(B, name), tag="wrk")
    sc = Scraper(s.exporter) if s.exporter else None
    try:
        subprocess.run(["wrk", "-t2", "-c32", "-d1s", "-s", script, f"http://{s.addr}"],
                       check=True, capture_output=True)  # warm-up
        out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", script,
                              f"http://{s.addr}"], check=True, capture_output=True, text=True).stdout
        rss = s.rss_kib()
    finally:
        if sc:
            sc.stop()
        s.stop()
    if re.search(r"Non-2xx|Socket errors", out):
        sys.exit(f"{name}: wrk saw errors\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    return rps, to_ms(m[1], m[2]), rss

if "wrk" in phases:
    log(f"== wrk -t2 -c32 -d{seconds}s, {rounds} rounds, order rotated each round (about "
        f"{rounds * len(NAMES) * (seconds + 2) // 60 + 1} min)")
    raw = {n: [] for n in NAMES}
    for r in range(rounds):
        order = NAMES[r % len(NAMES):] + NAMES[:r % len(NAMES)]
        for name in order:
            raw[name].append(wrk_run(name))
        log(f"round {r + 1}: " + "  ".join(f"{n.replace('svc_', '')} {raw[n][-1][0]:.0f}/s" for n in NAMES))
        with open(os.path.join(OUT, "wrk-raw.json"), "w") as f:
            json.dump(raw, f)
    for name in NAMES:
        rps = [x[0] for x in raw[name]]
        p99 = [x[1] for x in raw[name]]
        rss = [x[2][0] for x in raw[name]]
        res = results[name]
        res["anon"] = statistics.median(x[2][1] for x in raw[name])
        res["rps"], res["p99"], res["rss"] = statistics.median(rps), statistics.median(p99), rss
        base = raw["svc_system"]
        res["rps_sys"] = [x[0] / b[0] for x, b in zip(raw[name], base)]
        if INNER[name]:
            inner = raw[INNER[name]]
            res["rps_inner"] = [x[0] / b[0] for x, b in zip(raw[name], inner)]
            res["p99_inner"] = [x[1] / b[1] for x, b in zip(raw[name], inner)]

    save()

# ---- 4. profile quality
def pprof(args, path, binpath):
    env = dict(os.environ, PPROF_BINARY_PATH=binpath, PPROF_TMPDIR=OUT)
    r = subprocess.run(["go", "tool", "pprof", *args, path], capture_output=True, text=True, env=env, cwd=OUT)
    return r.stdout + r.stderr

def shares(top):
    """cum% of the two handler functions in a `-top -cum` listing, or None."""
    got = {}
    for key, fn in (("order", "summarize_order"), ("search", "run_search")):
        for line in top.splitlines():
            cols = line.split()
            if len(cols) >= 6 and re.search(rf"(^|::){fn}$", cols[5]) and cols[4].endswith("%"):
                got[key] = float(cols[4].rstrip("%"))
                break
    return got

def sample_types(path):
    raw = open(path, "rb").read()
    try:
        raw = gzip.decompress(raw)
    except OSError:
        pass
    return raw

if "profiles" in phases:
    log(f"== profiles: {prof_n} requests over 4 connections, then the profile; "
        "go tool pprof with no binary at hand")
    s = Service(os.path.join(B, "svc_exact"), tag="exact")
    load(s.addr, prof_n, 4)
    ex = dict(l.split("=") for l in subprocess.run(
        [os.path.join(B, "svc_load"), "--get", s.addr, "/exact"], check=True,
        capture_output=True, text=True).stdout.split())
    s.stop()
    ex = {k: int(v) for k, v in ex.items()}
    exact = {"order": 100 * ex["order_bytes"] / ex["total_bytes"],
             "search": 100 * ex["search_bytes"] / ex["total_bytes"]}
    results["exact"] = exact
    results["per_request"] = (ex["total_allocations"] / prof_n, ex["total_bytes"] / prof_n)
    log(f"exact: summarize_order {exact['order']:.1f}%, run_search {exact['search']:.1f}% of "
        f"{ex['total_bytes'] / 2**20:.0f} MiB allocated; {ex['total_allocations'] / prof_n:.0f} allocations "
        f"and {ex['total_bytes'] / prof_n / 1024:.1f} KiB per request")
    for name, route in [("svc_allocscope", "exporter"), ("svc_allocscope_mimalloc", "exporter"),
                        ("svc_jemalloc_prof", "service"), ("svc_pprof_alloc", "service")]:
        # run a copy, removed before pprof reads the profile: no binary at hand
        tmp = tempfile.mkdtemp(prefix=f"bin-{name}-", dir=OUT)
        exe = os.path.join(tmp, name)
        shutil.copy2(os.path.join(B, name), exe)
        s = Service(exe, tag="profile")
        load(s.addr, prof_n, 4)
        base = s.exporter if route == "exporter" else f"http://{s.addr}"
        path = os.path.join(OUT, f"{name}.allocs.pb.gz")
        t0 = time.time()
        with urllib.request.urlopen(base + "/debug/pprof/allocs", timeout=120) as r, open(path, "wb") as f:
            f.write(r.read())
        fetch_s = time.time() - t0
        s.stop()
        idx = "alloc_space" if b"alloc_space" in sample_types(path) else "inuse_space"
        with_bin = pprof(["-top", "-cum", "-nodefraction=0", f"-sample_index={idx}"], path, tmp)
        shutil.rmtree(tmp)
        empty = tempfile.mkdtemp(dir=OUT)
        top = pprof(["-top", "-cum", "-nodefraction=0", f"-sample_index={idx}"], path, empty)
        flat = pprof(["-top", "-nodecount=8", f"-sample_index={idx}"], path, empty)
        os.rmdir(empty)
        open(os.path.join(OUT, f"{name}.top.txt"), "w").write(flat + "\n\n" + top)
        open(os.path.join(OUT, f"{name}.top-with-binary.txt"), "w").write(with_bin)
        sh, shb = shares(top), shares(with_bin)
        symbolised = bool(re.search(r"::", top))
        results[name]["profile"] = dict(index=idx, shares=sh, shares_bin=shb, symbolised=symbolised,
                                        fetch_s=fetch_s, size=os.path.getsize(path))
        log(f"\n{name}: {idx}, {os.path.getsize(path)} bytes, fetched in {fetch_s:.2f} s; "
            f"no binary: {sh or 'handlers not named'}; with the binary: {shb or 'handlers not named'}")
        log("\n".join(flat.splitlines()[:14]))

save()

# ---- the table
def pct(d, k):
    return f"{d[k]:.1f}%" if k in d else "–"

log("\n== results (instructions: callgrind, worker thread, (I(2N) − I(N)) / N; "
    "ratios: per round, median (min–max))\n")
hdr = ("| allocator | instructions / request (worker) | vs inner | whole process | "
       "throughput vs System | throughput vs inner | p99 vs inner | VmRSS after load (RssAnon) | "
       "profile: summarize_order / run_search share |")
log(hdr)
log("|---" * (hdr.count("|") - 1) + "|")
for name in NAMES:
    r = results[name]
    inner = INNER[name]
    ir = f"{r['ir_worker']:,.0f}" if "ir_worker" in r else "–"
    vs = (f"{100 * (r['ir_worker'] / results[inner]['ir_worker'] - 1):+.1f}%"
          if inner and "ir_worker" in r and "ir_worker" in results[inner] else "")
    irall = f"{r['ir_all']:,.0f}" if "ir_all" in r else "–"
    tsys = fmt_range(r["rps_sys"]) if "rps_sys" in r and name != "svc_system" else (
        f"{r['rps']:,.0f} req/s" if "rps" in r else "–")
    tin = fmt_range(r["rps_inner"]) if "rps_inner" in r else ""
    p99 = fmt_range(r["p99_inner"]) if "p99_inner" in r else (f"p99 {r['p99']:.2f} ms" if "p99" in r else "")
    rss = (f"{statistics.median(r['rss']) / 1024:.1f} MiB ({min(r['rss']) / 1024:.1f}–{max(r['rss']) / 1024:.1f}; "
           f"anon {r['anon'] / 1024:.1f})" if "rss" in r else "–")
    pr = r.get("profile")
    if pr is None:
        q = "no profiler" if name not in ("svc_allocscope", "svc_allocscope_mimalloc",
                                          "svc_jemalloc_prof", "svc_pprof_alloc") else "–"
    elif pr["shares"]:
        q = f"{pct(pr['shares'], 'order')} / {pct(pr['shares'], 'search')} ({pr['index']})"
    else:
        q = (f"unsymbolised ({pr['index']}); with the binary: "
             f"{pct(pr['shares_bin'], 'order')} / {pct(pr['shares_bin'], 'search')}")
    log(f"| {LABEL[name]} | {ir} | {vs} | {irall} | {tsys} | {tin} | {p99} | {rss} | {q} |")
if "exact" in results:
    e = results["exact"]
    log(f"| exact (svc_exact, allocscope::measure) | | | | | | | | {e['order']:.1f}% / {e['search']:.1f}% |")
PY
