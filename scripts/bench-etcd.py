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

Raft-leader failure (--raft-runs, default 10): a fresh loopback 3-member cluster per cycle;
three participants with all three endpoints, the member they list first made etcd's raft leader
(`etcdctl move-leader`); then the participants' leader and that member are killed (-9) at once.
Measured for crown and, in the same run, for etcd's Go `concurrency.Election`
(tests/interop/etcd-go, built by scripts/build-etcd-go.sh): from the
deletion of the dead leader's key (seen by an `etcdctl watch` through the surviving members) to
the successor acting, and from the kill to the successor acting (mostly etcd's lease TTL, which
a new raft leader extends). Both at a 5 s session TTL (crown 5s / 4s / 1s): at 2 s, Go's
sessions expire on the client side while etcd elects a new raft leader.

Usage: scripts/bench-etcd.py [--runs 100] [--graceful-runs N] [--crash-runs N] [--ctl-runs N]
                             [--ctl-crash-runs 3] [--raft-runs 10] [--participants 3]
                             [--bin target/release/crown]
                             [--endpoints host:port,...]   (default: start one with etcd-local.sh)
                             [--json PATH]
       (--graceful-runs, --crash-runs and --ctl-runs default to --runs)
"""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, threading, time

from benchlib import ETCD_LOCAL, ROOT, Samples, start_etcd, stop_etcd, ts

TIMINGS = ["--lease-duration", "2s", "--renew-deadline", "1500ms", "--retry-period", "500ms"]
# The raft-leader failure: a new raft leader takes 1-2 s to elect and reach; a 2 s session dies
# meanwhile on the client side (Go's and crown's alike), so both run at a 5 s session TTL.
RAFT_TTL = 5
RAFT_TIMINGS = ["--lease-duration", "5s", "--renew-deadline", "4s", "--retry-period", "1s"]


class Crown:
    def __init__(self, binary, eps, election, pid_id, timings=TIMINGS):
        self.id = pid_id
        self.events = []
        self.cv = threading.Condition()
        self.proc = subprocess.Popen(
            [binary, "run", "--backend", "etcd", "--endpoints", eps, "--election", election,
             "--log-format", "json", "--id", pid_id] + timings,
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


class GoElector:
    """tests/interop/etcd-go: etcd's Go concurrency.Election; t_ns of its events."""

    def __init__(self, binary, eps, election, value):
        self.id = value
        self.events = {}
        self.proc = subprocess.Popen([binary, "--endpoints", eps, "--election", election, "--id", value,
                                      "--ttl", str(RAFT_TTL)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                j = json.loads(line)
            except ValueError:
                continue
            self.events.setdefault(j.get("event"), j.get("t_ns", 0) / 1e9)


class DeleteWatch:
    """tests/interop/etcd-go --watch-deletes through some endpoints: when each key was seen deleted.

    Not `etcdctl watch`: that one requires a raft leader, so the server cancels it while the
    cluster elects a new one (the very moment measured here) and the deletion goes unseen."""

    def __init__(self, gobin, eps, prefix):
        self.deleted = []
        self.watching = threading.Event()
        self.proc = subprocess.Popen([gobin, "--endpoints", eps, "--watch-deletes", prefix],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if j.get("event") == "watching":
                self.watching.set()
            elif j.get("event") == "deleted":
                self.deleted.append((j["t_ns"] / 1e9, j["key"]))

    def close(self):
        self.proc.kill()
        self.proc.wait()


class Missed(Exception):
    """A cycle whose measurement was lost (not a failure of the tool measured): retried."""


def ctl(eps, *args):
    return subprocess.run(["etcdctl", "--endpoints", eps] + list(args), capture_output=True, text=True,
                          env=dict(os.environ, ETCDCTL_API="3"))


def raft_leader_cycle(tool, binary, gobin, tmp):
    """One raft-leader failure with `tool` ("crown" or "go"): (after deletion, after kill) in s."""
    d = tempfile.mkdtemp(prefix=f"raft-{tool}-", dir=tmp)
    eps = None
    for attempt in range(3):
        # Free ports are picked before etcd binds them: on a busy machine, try again.
        try:
            r = subprocess.run([ETCD_LOCAL, "start", "--members", "3", "--dir", d], capture_output=True,
                               text=True, timeout=60)
            if r.returncode == 0 and r.stdout.strip():
                eps = r.stdout.strip()
                break
        except subprocess.TimeoutExpired:
            pass
        subprocess.run([ETCD_LOCAL, "stop", "--dir", d], capture_output=True)
        print(f"bench-etcd: 3-member etcd did not start (attempt {attempt + 1}/3)", file=sys.stderr)
    if not eps:
        raise SystemExit("bench-etcd: could not start a 3-member etcd")
    survivors = ",".join(eps.split(",")[1:])
    watch = None
    ps = []
    try:
        election = "bench-raft"
        if tool == "crown":
            ps = [Crown(binary, eps, election, f"p{i}", RAFT_TIMINGS) for i in range(3)]
            first = wait(lambda: next((p for p in ps if p.led_above(0)), None), "a first crown leader")
            term = first.led_above(0)["term"]
            wait(lambda: all(p.following(term) for p in ps), "followers")
        else:
            ps = []
            for i in range(3):
                ps.append(GoElector(binary, eps, election, f"g{i}"))
                wait(lambda: "campaigning" in ps[-1].events, "Go campaigning")
            first = wait(lambda: next((p for p in ps if "elected" in p.events), None), "a first Go leader")
        wait(lambda: candidates(eps, election) >= 3, "all candidates queued", 30)
        status = json.loads(ctl(eps, "endpoint", "status", "-w", "json").stdout)
        m0 = next(s for s in status if s["Endpoint"].endswith(eps.split(",")[0]))
        ctl(eps, "move-leader", format(m0["Status"]["header"]["member_id"], "x"))
        wait(lambda: all(s["Status"]["leader"] == m0["Status"]["header"]["member_id"]
                         for s in json.loads(ctl(eps, "endpoint", "status", "-w", "json").stdout)),
             "member 0 to lead raft", 30)
        watch = DeleteWatch(gobin, survivors, election + "/")
        # The watch is up once it reports a change: a probe key behind every candidate.
        probe = election + "/~probe"
        deadline = time.time() + 30
        while not any(k == probe for _, k in watch.deleted):
            if time.time() > deadline:
                raise SystemExit("bench-etcd: the deletion watch did not come up")
            ctl(survivors, "put", probe, "x")
            ctl(survivors, "del", probe)
            time.sleep(0.05)
        with open(os.path.join(d, "m0.pid")) as f:
            m0pid = int(f.read().strip())
        t0 = time.time()
        first.proc.send_signal(signal.SIGKILL)
        os.kill(m0pid, signal.SIGKILL)
        others = [p for p in ps if p is not first]
        if tool == "crown":
            e = wait(lambda: next((p.led_above(term) for p in others if p.led_above(term)), None),
                     "a new crown leader", 120)
            acted = ts(e["timestamp"])
        else:
            acted = wait(lambda: next((p.events["elected"] for p in others if "elected" in p.events), None),
                         "a new Go leader", 120)
        try:
            deleted = wait(lambda: next((t for t, k in watch.deleted if k != probe), None), "the deletion", 30)
        except SystemExit:
            err = watch.proc.stderr.read() if watch.proc.poll() is not None else "still running"
            raise Missed(f"the deletion watch saw no deletion (watcher: {err.strip()})")
        return acted - deleted, acted - t0
    finally:
        if watch:
            watch.close()
        for p in ps:
            if p.proc.poll() is None:
                p.proc.kill()
            p.proc.wait()
        subprocess.run([ETCD_LOCAL, "stop", "--dir", d], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)  # 3 members' data: a few hundred MB per cycle


def bench_raft(tool, binary, gobin, runs, tmp):
    after_delete, after_kill = [], []
    missed = 0
    while len(after_delete) < runs:
        try:
            a, k = raft_leader_cycle(tool, binary, gobin, tmp)
        except Missed as e:
            missed += 1
            print(f"bench-etcd: {tool} raft-leader cycle lost its measurement ({e}); repeating it", file=sys.stderr)
            if missed > 3:
                raise SystemExit(f"bench-etcd: {missed} {tool} raft-leader cycles lost their measurement")
            continue
        after_delete.append(a)
        after_kill.append(k)
    return after_delete, after_kill


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
    ap.add_argument("--raft-runs", type=int, default=10,
                    help="raft-leader failure cycles per client (a fresh 3-member cluster each; default 10)")
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
        if a.raft_runs:
            tmp = tempfile.mkdtemp(prefix="crown-bench-raft-")
            gobin = subprocess.run([os.path.join(ROOT, "scripts", "build-etcd-go.sh")], capture_output=True,
                                   text=True, check=True).stdout.strip()
            note = ("3-member loopback etcd; the participants' first endpoint made raft leader, then it and "
                    "the participants' leader killed (-9) together; session TTL 5 s for both")
            cd, ck = bench_raft("crown", a.bin, gobin, a.raft_runs, tmp)
            out.add("crown, raft leader killed with the crowns' member: key deleted → BECAME LEADER", "crown",
                    "raft-leader", "5s/4s/1s", cd, note=note)
            out.add("crown, same fault: kill → BECAME LEADER (etcd's lease TTL + extension)", "crown",
                    "raft-leader-total", "5s/4s/1s", ck, note=note)
            gd, gk = bench_raft("go", gobin, gobin, a.raft_runs, tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            out.add("Go concurrency.Election, same fault: key deleted → Campaign returns", "go-concurrency",
                    "raft-leader", "TTL 5s", gd, note=note)
            out.add("Go concurrency.Election, same fault: kill → Campaign returns", "go-concurrency",
                    "raft-leader-total", "TTL 5s", gk, note=note)
        if a.json:
            print(f"raw samples: {a.json}", file=sys.stderr)
    finally:
        if d:
            stop_etcd(d)


if __name__ == "__main__":
    main()
