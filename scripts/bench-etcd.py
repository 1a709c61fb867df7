#!/usr/bin/env python3
"""Failover latency of crown's etcd backend beside `etcdctl elect`, on the same loopback etcd.

Each cycle: find the leader, send it SIGTERM (graceful handoff: crown resigns; for etcdctl,
SIGINT, on which it resigns) or SIGKILL (crash failover: the successor waits for the session
lease to expire), and time until another participant is elected (crown: its BECAME LEADER log
line with a higher term; etcdctl: the moment it prints its leader key). The victim is replaced
so N participants always run. Prints p50 / p90 / p99 / max per scenario as a markdown table.

etcdctl elect (3.4) has no TTL flag: its session lease is fixed at 60 s, so its crash failover
is that long by construction; it is measured only with --ctl-crash-runs N (default 0).

Usage: scripts/bench-etcd.py [--runs 50] [--participants 3] [--bin target/release/crown]
                             [--endpoints host:port,...]   (default: start one with etcd-local.sh)
"""
import argparse, json, os, signal, subprocess, sys, tempfile, threading, time
from datetime import datetime, timezone

TIMINGS = ["--lease-duration", "2s", "--renew-deadline", "1500ms", "--retry-period", "500ms"]


def ts(s):
    s = s.rstrip("Z")
    main, _, frac = s.partition(".")
    t = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return t + (float("0." + frac) if frac else 0.0)


class Crown:
    def __init__(self, binary, eps, election, pid_id):
        self.id = pid_id
        self.events = []
        self.cv = threading.Condition()
        self.proc = subprocess.Popen(
            [binary, "run", "--backend", "etcd", "--endpoints", eps, "--election", election,
             "--log-format", "json", "--id", pid_id] + TIMINGS,
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

    def led_above(self, term):
        with self.cv:
            for e in self.events:
                if e.get("event") == "became_leader" and e.get("term", 0) > term:
                    return e
        return None

    def following(self, term):
        with self.cv:
            return any(e.get("term") == term and e.get("event") in ("follower", "became_leader")
                       for e in self.events)


class Ctl:
    def __init__(self, eps, election, value):
        self.id = value
        self.elected_at = None
        self.proc = subprocess.Popen(["etcdctl", "--endpoints", eps, "elect", election, value],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=dict(os.environ, ETCDCTL_API="3"))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for _ in self.proc.stdout:
            if self.elected_at is None:
                self.elected_at = time.time()


def wait(pred, what, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.002)
    raise SystemExit(f"bench-etcd: timed out waiting for {what}")


def candidates(eps, election):
    out = subprocess.run(["etcdctl", "--endpoints", eps, "get", "--prefix", election + "/", "--keys-only"],
                         capture_output=True, text=True, env=dict(os.environ, ETCDCTL_API="3")).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def bench_crown(binary, eps, runs, n, sig):
    election = f"bench-crown-{os.getpid()}-{int(sig)}"
    ps = [Crown(binary, eps, election, f"p{i}") for i in range(n)]
    nxt, lat = n, []
    first = wait(lambda: next((p.led_above(0) for p in ps if p.led_above(0)), None), "a first leader")
    term = first["term"]
    for _ in range(runs):
        victim = next(p for p in ps if p.led_above(term - 1) and p.led_above(term - 1)["term"] == term)
        others = [p for p in ps if p is not victim]
        wait(lambda: all(p.following(term) for p in others), "followers")
        wait(lambda: candidates(eps, election) >= n, "all candidates queued", 30)
        t0 = time.time()
        victim.proc.send_signal(sig)
        e = wait(lambda: next((p.led_above(term) for p in others if p.led_above(term)), None), "a new leader")
        lat.append(ts(e["timestamp"]) - t0)
        term = e["term"]
        victim.proc.wait()
        ps.remove(victim)
        ps.append(Crown(binary, eps, election, f"p{nxt}"))
        nxt += 1
    for p in ps:
        p.proc.send_signal(signal.SIGTERM)
    for p in ps:
        p.proc.wait()
    return lat


def bench_ctl(eps, runs, n, sig):
    election = f"bench-ctl-{os.getpid()}-{int(sig)}"
    ps = []
    for i in range(n):
        ps.append(Ctl(eps, election, f"c{i}"))
        wait(lambda: candidates(eps, election) >= i + 1, "etcdctl queued", 30)
    nxt, lat = n, []
    for _ in range(runs):
        victim = wait(lambda: next((p for p in ps if p.elected_at), None), "an etcdctl leader")
        others = [p for p in ps if p is not victim]
        wait(lambda: candidates(eps, election) >= n, "all candidates queued", 30)
        t0 = time.time()
        victim.proc.send_signal(sig)
        p = wait(lambda: next((p for p in others if p.elected_at), None), "a new etcdctl leader", 120)
        lat.append(p.elected_at - t0)
        victim.proc.wait()
        ps.remove(victim)
        ps.append(Ctl(eps, election, f"c{nxt}"))
        nxt += 1
    for p in ps:
        p.proc.send_signal(signal.SIGINT)
    for p in ps:
        p.proc.wait()
    return lat


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def report(name, xs):
    if not xs:
        print(f"| {name} | 0 | - | - | - | - |")
        return
    ms = [x * 1000 for x in xs]
    print(f"| {name} | {len(ms)} | {pct(ms, 50):.1f} | {pct(ms, 90):.1f} | {pct(ms, 99):.1f} | {max(ms):.1f} |",
          flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--participants", type=int, default=3)
    ap.add_argument("--bin", default="target/release/crown")
    ap.add_argument("--endpoints")
    ap.add_argument("--ctl-crash-runs", type=int, default=0)
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    d = None
    eps = a.endpoints
    if not eps:
        d = tempfile.mkdtemp(prefix="crown-bench-etcd-")
        eps = subprocess.run([os.path.join(here, "etcd-local.sh"), "start", "--members", "1", "--dir", d],
                             check=True, capture_output=True, text=True).stdout.strip()
    try:
        print(f"etcd at {eps}; {a.participants} participants; {a.runs} cycles each; "
              f"crown timings lease 2s / renew 1.5s / retry 500ms; etcdctl session TTL 60 s (fixed)")
        print()
        print("| scenario | runs | p50 ms | p90 ms | p99 ms | max ms |")
        print("|---|---|---|---|---|---|")
        report("crown graceful handoff (SIGTERM → BECAME LEADER)",
               bench_crown(a.bin, eps, a.runs, a.participants, signal.SIGTERM))
        report("etcdctl elect graceful handoff (SIGINT → next prints its key)",
               bench_ctl(eps, a.runs, a.participants, signal.SIGINT))
        report("crown crash failover (kill -9 → BECAME LEADER; TTL 2 s)",
               bench_crown(a.bin, eps, a.runs, a.participants, signal.SIGKILL))
        report("etcdctl elect crash failover (kill -9 → next prints its key; TTL 60 s)",
               bench_ctl(eps, a.ctl_crash_runs, a.participants, signal.SIGKILL) if a.ctl_crash_runs else [])
    finally:
        if d:
            subprocess.run([os.path.join(here, "etcd-local.sh"), "stop", "--dir", d])


if __name__ == "__main__":
    main()
