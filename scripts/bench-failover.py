#!/usr/bin/env python3
"""Failover latency of crown's file backend, measured from outside.

For each cycle: find the leader from the lease file, send it SIGKILL (crash failover) or SIGTERM
(graceful handoff), and time until another participant logs BECAME LEADER with a higher term
(timestamps from the same host clock). The victim is replaced so N participants always run.
Prints p50 / p90 / p99 / max per scenario, and the `flock(1)` baseline (the kernel's floor for
a blocking lock wait) measured the same way. With --json PATH, also writes every raw sample
(the input of scripts/plot-bench.py).

Usage: scripts/bench-failover.py [--runs 100] [--crash-runs N] [--graceful-runs N] [--flock-runs N]
                                 [--participants 3] [--bin target/release/crown] [--json PATH]
       (--crash-runs, --graceful-runs and --flock-runs default to --runs)
"""
import argparse, json, os, platform, signal, subprocess, sys, tempfile, threading, time
from datetime import datetime

def ts(s):
    # 2026-11-22T23:18:52.615619Z -> epoch seconds (float)
    s = s.rstrip("Z")
    main, _, frac = s.partition(".")
    t = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=__import__("datetime").timezone.utc).timestamp()
    return t + (float("0." + frac) if frac else 0.0)

class P:
    def __init__(self, binary, d, pid_id, timings):
        self.id = pid_id
        self.events = []
        self.cv = threading.Condition()
        self.proc = subprocess.Popen([binary, "run", "--log-format", "json", "--id", pid_id, "--dir", d] + timings,
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            try:
                j = json.loads(line)
            except ValueError:
                continue
            with self.cv:
                self.events.append(j)
                self.cv.notify_all()

def wait_new_leader(ps, term, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in ps:
            with p.cv:
                for e in p.events:
                    if e.get("event") == "became_leader" and e.get("term", 0) > term:
                        return p, e
        time.sleep(0.002)
    raise SystemExit(f"no new leader above term {term} within {timeout}s")

def wait_followers(ps, term, timeout=30):
    deadline = time.time() + timeout
    for p in ps:
        while time.time() < deadline:
            with p.cv:
                if any(e.get("term") == term and e.get("event") in ("follower", "became_leader") for e in p.events):
                    break
            time.sleep(0.002)

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]

def report(name, xs):
    ms = [x * 1000 for x in xs]
    print(f"| {name} | {len(ms)} | {pct(ms,50):.1f} | {pct(ms,90):.1f} | {pct(ms,99):.1f} | {max(ms):.1f} |",
          flush=True)

def machine():
    kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
    return f"{os.cpu_count()} cores, {kb / 1048576:.1f} GiB, {platform.system()} {platform.release()}"

class Samples:
    """Every raw sample, rewritten to --json PATH after each scenario (a cut-short run keeps what it has)."""
    def __init__(self, path, backend, server):
        self.path = path
        self.doc = {"backend": backend, "machine": machine(), "server": server, "scenarios": []}
        self.t = time.time()

    def add(self, name, tool, kind, timings, xs):
        report(name, xs)
        now = time.time()
        print(f"bench-failover: {name}: {len(xs)} cycles in {now - self.t:.1f} s", file=sys.stderr, flush=True)
        self.t = now
        self.doc["scenarios"].append({"name": name, "tool": tool, "kind": kind, "timings": timings,
                                      "samples_ms": [round(x * 1000, 3) for x in xs]})
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path + ".tmp", "w") as f:
                json.dump(self.doc, f, indent=1, ensure_ascii=False)
            os.replace(self.path + ".tmp", self.path)

def bench_crown(binary, runs, n, sig, timings):
    d = tempfile.mkdtemp(prefix="crown-bench-")
    ps = [P(binary, d, f"p{i}", timings) for i in range(n)]
    nxt = n
    lat = []
    _, first = wait_new_leader(ps, 0)
    term = first["term"]
    for _ in range(runs):
        rec = json.load(open(os.path.join(d, "crown.lease")))
        while rec["holder"] == "" or rec["term"] != term:
            time.sleep(0.005)
            rec = json.load(open(os.path.join(d, "crown.lease")))
        victim = next(p for p in ps if p.id == rec["holder"])
        wait_followers([p for p in ps if p is not victim], term)
        t0 = time.time()
        victim.proc.send_signal(sig)
        p, e = wait_new_leader([p for p in ps if p is not victim], term)
        lat.append(ts(e["timestamp"]) - t0)
        term = e["term"]
        victim.proc.wait()
        ps.remove(victim)
        ps.append(P(binary, d, f"p{nxt}", timings)); nxt += 1
    for p in ps:
        p.proc.send_signal(signal.SIGTERM)
    for p in ps:
        p.proc.wait()
    return lat

def bench_flock(runs):
    """flock(1): a process holding the lock is killed; how long until a `flock` blocked on it
    runs its command (`date`). This is the kernel's floor for a blocking lock wait plus one exec."""
    d = tempfile.mkdtemp(prefix="flock-bench-")
    lock = os.path.join(d, "lock")
    holder_src = ("import fcntl,sys,time\nf=open(sys.argv[1],'w')\nfcntl.flock(f,fcntl.LOCK_EX)\n"
                  "print('locked',flush=True)\ntime.sleep(600)\n")
    lat = []
    for _ in range(runs):
        holder = subprocess.Popen([sys.executable, "-c", holder_src, lock], stdout=subprocess.PIPE, text=True)
        holder.stdout.readline()
        waiter = subprocess.Popen(["flock", lock, "date", "+%s.%N"], stdout=subprocess.PIPE, text=True)
        # Wait until the waiter is blocked in flock(2) (its wchan), not a fixed sleep.
        for _ in range(2000):
            try:
                if open(f"/proc/{waiter.pid}/wchan").read() not in ("0", ""):
                    if "flock" in open(f"/proc/{waiter.pid}/comm").read():
                        break
            except OSError:
                pass
            time.sleep(0.001)
        time.sleep(0.01)
        t0 = time.time()
        holder.kill(); holder.wait()
        out = waiter.communicate()[0]
        lat.append(float(out.strip()) - t0)
    return lat

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100, help="cycles per scenario (default 100)")
    ap.add_argument("--crash-runs", type=int, help="crown crash failover cycles (default --runs)")
    ap.add_argument("--graceful-runs", type=int, help="crown graceful handoff cycles (default --runs)")
    ap.add_argument("--flock-runs", type=int, help="flock(1) baseline cycles (default --runs)")
    ap.add_argument("--participants", type=int, default=3)
    ap.add_argument("--bin", default="target/release/crown")
    ap.add_argument("--json", metavar="PATH", help="also write every raw sample here (for scripts/plot-bench.py)")
    a = ap.parse_args()
    crash = a.runs if a.crash_runs is None else a.crash_runs
    graceful = a.runs if a.graceful_runs is None else a.graceful_runs
    flock = a.runs if a.flock_runs is None else a.flock_runs
    timings = []  # crown's defaults: 5s / 3s / 1s
    fs = (subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", tempfile.gettempdir()], capture_output=True,
                         text=True).stdout.strip()
          or subprocess.run(["stat", "-f", "-c", "%T", tempfile.gettempdir()], capture_output=True,
                            text=True).stdout.strip())
    out = Samples(a.json, "file", f"local fs ({fs or 'unknown'} at {tempfile.gettempdir()})")
    print(f"crown file backend, {a.participants} participants, defaults 5s/3s/1s; "
          f"cycles: crash {crash}, graceful {graceful}, flock(1) {flock}; {out.doc['machine']}")
    print("| scenario | runs | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    if crash:
        out.add("crash failover (kill -9 → BECAME LEADER)", "crown", "crash", "5s/3s/1s",
                bench_crown(a.bin, crash, a.participants, signal.SIGKILL, timings))
    if graceful:
        out.add("graceful handoff (SIGTERM → BECAME LEADER)", "crown", "graceful", "5s/3s/1s",
                bench_crown(a.bin, graceful, a.participants, signal.SIGTERM, timings))
    if flock:
        out.add("flock(1) baseline (kill holder → waiter runs)", "flock", "crash", "-", bench_flock(flock))
    if a.json:
        print(f"raw samples: {a.json}", file=sys.stderr)

if __name__ == "__main__":
    main()
