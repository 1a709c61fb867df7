#!/usr/bin/env python3
"""Failover latency of crown's etcd backend beside `etcdctl elect`, on the same loopback etcd.

Each cycle: find the leader, send it SIGTERM (graceful handoff: crown resigns; for etcdctl,
SIGINT, on which it resigns) or SIGKILL (crash failover: the successor waits for the session
lease to expire), and time until another participant is elected (crown: its BECAME LEADER log
line with a higher term; etcdctl: the moment it prints its leader key). The victim is replaced
so N participants always run. Prints p50 / p90 / p99 / max per scenario as a markdown table;
with --json PATH, also writes every raw sample (the input of scripts/plot-bench.py).

etcdctl elect (3.4) has no TTL flag: its session lease is fixed at 60 s, so its crash failover
takes 40-60 s by construction (the dead session's key lives until its lease, last kept alive
up to 20 s before the kill, expires); it is measured --ctl-crash-runs times (default 3, about
3 minutes), not --runs.

Usage: scripts/bench-etcd.py [--runs 100] [--graceful-runs N] [--crash-runs N] [--ctl-runs N]
                             [--ctl-crash-runs 3] [--participants 3] [--bin target/release/crown]
                             [--endpoints host:port,...]   (default: start one with etcd-local.sh)
                             [--json PATH]
       (--graceful-runs, --crash-runs and --ctl-runs default to --runs)
"""
import argparse, json, os, signal, subprocess, sys, tempfile, threading, time

from benchlib import Samples, start_etcd, stop_etcd, ts

TIMINGS = ["--lease-duration", "2s", "--renew-deadline", "1500ms", "--retry-period", "500ms"]


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


def etcd_version(eps):
    out = subprocess.run(["etcdctl", "--endpoints", eps, "endpoint", "status", "-w", "json"],
                         capture_output=True, text=True, env=dict(os.environ, ETCDCTL_API="3")).stdout
    try:
        versions = sorted({s["Status"]["version"] for s in json.loads(out)})
    except (ValueError, KeyError, TypeError):
        versions = []
    return "etcd " + "/".join(versions) if versions else "etcd (version unknown)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100, help="cycles per scenario (default 100)")
    ap.add_argument("--graceful-runs", type=int, help="crown graceful handoff cycles (default --runs)")
    ap.add_argument("--crash-runs", type=int, help="crown crash failover cycles (default --runs)")
    ap.add_argument("--ctl-runs", type=int, help="etcdctl elect graceful handoff cycles (default --runs)")
    ap.add_argument("--ctl-crash-runs", type=int, default=3,
                    help="etcdctl elect crash failover cycles (default 3: each takes 40-60 s, its fixed session TTL)")
    ap.add_argument("--participants", type=int, default=3)
    ap.add_argument("--bin", default="target/release/crown")
    ap.add_argument("--endpoints")
    ap.add_argument("--json", metavar="PATH", help="also write every raw sample here (for scripts/plot-bench.py)")
    a = ap.parse_args()
    graceful = a.runs if a.graceful_runs is None else a.graceful_runs
    crash = a.runs if a.crash_runs is None else a.crash_runs
    ctl = a.runs if a.ctl_runs is None else a.ctl_runs
    d = None
    eps = a.endpoints
    if not eps:
        d = tempfile.mkdtemp(prefix="crown-bench-etcd-")
        eps = start_etcd(d, "bench-etcd")
    try:
        out = Samples(a.json, "etcd", etcd_version(eps) + (" (loopback, 1 member)" if d else f" at {eps}"), "bench-etcd")
        why = (f"etcdctl elect crash failover: {a.ctl_crash_runs} cycles (--ctl-crash-runs)"
               + (f", not {a.runs}" if a.ctl_crash_runs < a.runs else "")
               + ": etcdctl elect's session TTL is fixed at 60 s, so each cycle waits 40-60 s for the dead "
               "session's key to expire; the number measures that TTL, not the election.")
        print(f"{out.doc['server']} at {eps}; {a.participants} participants; cycles: crown graceful {graceful}, "
              f"etcdctl graceful {ctl}, crown crash {crash}, etcdctl crash {a.ctl_crash_runs}; "
              f"crown timings lease 2s / renew 1.5s / retry 500ms; etcdctl session TTL 60 s (fixed); "
              f"{out.doc['machine']}")
        print(why)
        print()
        print("| scenario | runs | p50 ms | p90 ms | p99 ms | max ms |")
        print("|---|---|---|---|---|---|")
        if graceful:
            out.add("crown graceful handoff (SIGTERM → BECAME LEADER)", "crown", "graceful", "2s/1.5s/0.5s",
                    bench_crown(a.bin, eps, graceful, a.participants, signal.SIGTERM))
        if ctl:
            out.add("etcdctl elect graceful handoff (SIGINT → next prints its key)", "etcdctl", "graceful",
                    "TTL 60s (fixed)", bench_ctl(eps, ctl, a.participants, signal.SIGINT))
        if crash:
            out.add("crown crash failover (kill -9 → BECAME LEADER; TTL 2 s)", "crown", "crash", "2s/1.5s/0.5s",
                    bench_crown(a.bin, eps, crash, a.participants, signal.SIGKILL))
        out.add("etcdctl elect crash failover (kill -9 → next prints its key; TTL 60 s)", "etcdctl", "crash",
                "TTL 60s (fixed)",
                bench_ctl(eps, a.ctl_crash_runs, a.participants, signal.SIGKILL) if a.ctl_crash_runs else [],
                note=why)
        if a.json:
            print(f"raw samples: {a.json}", file=sys.stderr)
    finally:
        if d:
            stop_etcd(d)


if __name__ == "__main__":
    main()
