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
import argparse, json, os, signal, subprocess, sys, tempfile, threading, time

from benchlib import Samples, ts

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
    out = Samples(a.json, "file", f"local fs ({fs or 'unknown'} at {tempfile.gettempdir()})", "bench-failover")
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
