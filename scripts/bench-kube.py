#!/usr/bin/env python3
"""crown's Kubernetes Lease backend beside client-go's leaderelection, on one real kube-apiserver.

Starts an apiserver with scripts/kube-test-env.sh, then for crown and for the client-go elector
(tests/interop/client-go, built by scripts/build-clientgo.sh), each alone on a fresh Lease:
- graceful handoff: SIGTERM the leader (crown releases; client-go with --release-on-cancel) →
  the next "became leader" line of another participant;
- crash failover: SIGKILL the leader → the next leader (bounded below by the lease duration);
- cost: apiserver requests per participant per minute (from apiserver_request_total on /metrics,
  resource=leases and events), with 3 participants running for --cost-seconds.
Latencies are from the signal to the line's arrival on our pipe (same host). Before each signal,
every follower has logged the current leader (crown: its "follower" event; client-go: NEW_LEADER),
then the signal waits a random 0..1 retry period, so it lands at a uniformly random point of the
leader's renew cycle and of client-go's polls rather than always just after them.
client-go runs with crown's bench timings (2s/1.5s/0.5s) and with its own defaults (15s/10s/2s).
With --json PATH, also writes every raw sample (the input of scripts/plot-bench.py).

Usage: scripts/bench-kube.py [--runs 100] [--graceful-runs N] [--crash-runs N]
                             [--go-graceful-runs N] [--go-crash-runs N]
                             [--go-default-graceful-runs N] [--go-default-crash-runs 10]
                             [--cost-seconds 60 (0: no cost table)] [--json PATH]
  --graceful-runs, --crash-runs          crown at 2s/1.5s/0.5s (default --runs)
  --go-graceful-runs, --go-crash-runs    client-go at 2s/1.5s/0.5s (default: the two above)
  --go-default-graceful-runs             client-go with its defaults, SIGTERM (default --runs: ~2 s a cycle)
  --go-default-crash-runs                client-go with its defaults, kill -9 (default 10: each cycle waits
                                         out its 15 s lease, ~17 s; 100 would take ~30 minutes)
"""
import argparse, json, os, random, signal, subprocess, sys, tempfile, threading, time

from benchlib import KubeServer, Samples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CROWN = os.path.join(ROOT, "target", "release", "crown")

class Proc:
    """A participant; `pattern(line)` is true on its "became leader" line, `follows(line)` returns the
    leader's identity on a line that says it observed a leader (else None)."""
    def __init__(self, ident, argv, env, pattern, follows, stream):
        self.ident = ident
        self.events = []
        self.leaders_seen = set()
        self.cv = threading.Condition()
        self.pattern = pattern
        self.follows = follows
        self.p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
                                  stderr=subprocess.PIPE if stream == "stderr" else subprocess.DEVNULL, text=True)
        src = self.p.stdout if stream == "stdout" else self.p.stderr
        threading.Thread(target=self._read, args=(src,), daemon=True).start()

    def _read(self, src):
        for line in src:
            if self.pattern(line):
                with self.cv:
                    self.events.append(time.time())
                    self.cv.notify_all()
            else:
                leader = self.follows(line)
                if leader:
                    with self.cv:
                        self.leaders_seen.add(leader)
                        self.cv.notify_all()

    def saw_leader(self, ident):
        with self.cv:
            return ident in self.leaders_seen

    def led_since(self, t):
        with self.cv:
            return next((e for e in self.events if e >= t), None)

def crown_follows(line):
    if '"event":"follower"' not in line:
        return None
    try:
        return json.loads(line).get("leader")
    except ValueError:
        return None

def crown_proc(env, ident, timings):
    return Proc(ident, [CROWN, "run", "--backend", "kube", "-n", "bench", "--log-format", "json", "--id", ident] + timings,
                env, lambda l: '"event":"became_leader"' in l, crown_follows, "stderr")

def go_proc(bin_, env, ident, timings):
    prefix = f"NEW_LEADER id={ident} leader="
    return Proc(ident, [bin_, "--namespace", "bench", "--lease-name", "crown", "--id", ident, "--release-on-cancel"] + timings,
                env, lambda l: l.startswith(f"STARTED_LEADING id={ident}"),
                lambda l: l[len(prefix):].strip() if l.startswith(prefix) else None, "stdout")

def wait_followers(leader, others, timeout=60):
    """Until every other participant has logged `leader` as the leader (its watch or poll saw it)."""
    end = time.time() + timeout
    while time.time() < end:
        if all(p.saw_leader(leader.ident) for p in others):
            return
        time.sleep(0.002)
    raise SystemExit(f"bench-kube: followers did not all observe leader {leader.ident} within {timeout}s")

def wait_leader(ps, t, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        hits = [(p.led_since(t), p) for p in ps]
        hits = [h for h in hits if h[0] is not None]
        if hits:
            return min(hits, key=lambda h: h[0])
        time.sleep(0.002)
    raise SystemExit("no leader")

def requests(srv):
    """apiserver requests on leases and events so far, by "resource:verb"."""
    return {k: v for k, v in srv.requests().items() if k.split(":")[0] in ("leases", "events")}

def cycles(make, n_runs, sig, timings_env, retry):
    if n_runs <= 0:
        return []
    env, mk = timings_env
    ps = [make(i) for i in range(3)]
    nxt = 3
    t = time.time()
    lat = []
    _, leader = wait_leader(ps, t - 3600)
    for _ in range(n_runs):
        others = [p for p in ps if p is not leader]
        wait_followers(leader, others)
        time.sleep(random.uniform(0, retry))  # a random phase of the renew/poll cycle (see the top)
        t0 = time.time()
        leader.p.send_signal(sig)
        when, new = wait_leader(others, t0)
        lat.append(when - t0)
        leader.p.wait()
        ps = others + [make(nxt)]
        nxt += 1
        leader = new
    for p in ps:
        p.p.send_signal(signal.SIGTERM)
    for p in ps:
        p.p.wait()
    return lat

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100, help="cycles per scenario (default 100)")
    ap.add_argument("--graceful-runs", type=int, help="crown graceful handoff cycles, 2s/1.5s/0.5s (default --runs)")
    ap.add_argument("--crash-runs", type=int, help="crown crash failover cycles, 2s/1.5s/0.5s (default --runs)")
    ap.add_argument("--go-graceful-runs", type=int, help="client-go graceful cycles, 2s/1.5s/0.5s (default --graceful-runs)")
    ap.add_argument("--go-crash-runs", type=int, help="client-go crash cycles, 2s/1.5s/0.5s (default --crash-runs)")
    ap.add_argument("--go-default-graceful-runs", type=int,
                    help="client-go graceful cycles with its defaults 15s/10s/2s (default --runs; ~2 s a cycle)")
    ap.add_argument("--go-default-crash-runs", type=int, default=10,
                    help="client-go crash cycles with its defaults 15s/10s/2s (default 10: ~17 s a cycle)")
    ap.add_argument("--cost-seconds", type=int, default=60, help="seconds per cost row (default 60; 0: no cost table)")
    ap.add_argument("--json", metavar="PATH", help="also write every raw sample here (for scripts/plot-bench.py)")
    ap.add_argument("--bin", help="the crown binary (default: build target/release/crown)")
    a = ap.parse_args()
    global CROWN
    graceful = a.runs if a.graceful_runs is None else a.graceful_runs
    crash = a.runs if a.crash_runs is None else a.crash_runs
    go_graceful = graceful if a.go_graceful_runs is None else a.go_graceful_runs
    go_crash = crash if a.go_crash_runs is None else a.go_crash_runs
    go_def_graceful = a.runs if a.go_default_graceful_runs is None else a.go_default_graceful_runs
    go_def_crash = a.go_default_crash_runs
    if a.bin:
        CROWN = os.path.abspath(a.bin)
    else:
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    go_bin = subprocess.run(["bash", os.path.join(ROOT, "scripts/build-clientgo.sh")], check=True, capture_output=True, text=True).stdout.strip()
    srv = KubeServer(tempfile.mkdtemp(prefix="crown-bench-kube-"), "bench")
    try:
        env = srv.env
        fast = ["--lease-duration", "2s", "--renew-deadline", "1500ms", "--retry-period", "500ms"]
        defaults_crown = ["--lease-duration", "5s", "--renew-deadline", "3s", "--retry-period", "1s"]
        defaults_go = ["--lease-duration", "15s", "--renew-deadline", "10s", "--retry-period", "2s"]
        version = srv.envf["CROWN_KUBE_VERSION"]
        out = Samples(a.json, "kube", f"kube-apiserver {version}", "bench-kube", digits=0, echo=False)
        out.doc["cost"] = []
        def fresh():
            subprocess.run(["kubectl", "-n", "bench", "delete", "lease", "--all"], env=env, capture_output=True)
        for name, tool, mk, n_graceful, n_crash in [
            ("crown", "crown", lambda t: (lambda i: crown_proc(env, f"c{time.time_ns()}", t)), graceful, crash),
            ("client-go", "client-go", lambda t: (lambda i: go_proc(go_bin, env, f"g{time.time_ns()}", t)),
             go_graceful, go_crash),
        ]:
            fresh()
            out.add(f"{name}: graceful handoff (SIGTERM), 2s/1.5s/0.5s", tool, "graceful", "2s/1.5s/0.5s",
                    cycles(mk(fast), n_graceful, signal.SIGTERM, (env, None), 0.5))
            fresh()
            out.add(f"{name}: crash failover (kill -9), 2s/1.5s/0.5s", tool, "crash", "2s/1.5s/0.5s",
                    cycles(mk(fast), n_crash, signal.SIGKILL, (env, None), 0.5))
        go_default = lambda i: go_proc(go_bin, env, f"g{time.time_ns()}", defaults_go)
        notes = []
        if go_def_graceful < a.runs:
            notes.append(f"client-go graceful handoff with its defaults: {go_def_graceful} cycles "
                         f"(--go-default-graceful-runs), not {a.runs}.")
        fresh()
        out.add("client-go: graceful handoff (SIGTERM), its defaults 15s/10s/2s", "client-go", "graceful", "15s/10s/2s",
                cycles(go_default, go_def_graceful, signal.SIGTERM, (env, None), 2.0), note=notes[-1] if notes else None)
        why = (f"client-go crash failover with its defaults: {go_def_crash} cycles (--go-default-crash-runs)"
               + (f", not {a.runs}" if go_def_crash < a.runs else "")
               + ": each cycle waits out its 15 s lease duration (about 17 s a cycle), so 100 would take "
               "about half an hour; the number measures that lease duration, not the election.")
        notes.append(why)
        fresh()
        out.add("client-go: crash failover (kill -9), its defaults 15s/10s/2s", "client-go", "crash", "15s/10s/2s",
                cycles(go_default, go_def_crash, signal.SIGKILL, (env, None), 2.0), note=why)
        print(f"kube-apiserver {version}, 3 participants, same machine; {out.doc['machine']}")
        for n in notes:
            print(n)
        print()
        print("| scenario | runs | p50 ms | p90 ms | p99 ms | max ms |")
        print("|---|---|---|---|---|---|")
        print("\n".join(out.rows))
        print()
        if a.cost_seconds > 0:
            print(f"| apiserver requests per participant per minute ({a.cost_seconds}s, 3 participants) | leases | events | by verb |")
            print("|---|---|---|---|")
        for name, make, timings in [("crown 5s/3s/1s", lambda i: crown_proc(env, f"k{i}", defaults_crown), None),
                                    ("crown 2s/1.5s/0.5s", lambda i: crown_proc(env, f"f{i}", fast), None),
                                    ("client-go 15s/10s/2s", lambda i: go_proc(go_bin, env, f"g{i}", defaults_go), None),
                                    ("client-go 2s/1.5s/0.5s", lambda i: go_proc(go_bin, env, f"h{i}", fast), None)]:
            if a.cost_seconds <= 0:
                break
            fresh()
            ps = [make(i) for i in range(3)]
            time.sleep(5)  # settle: one leader, members published
            r0 = requests(srv)
            time.sleep(a.cost_seconds)
            r1 = requests(srv)
            for p in ps:
                p.p.send_signal(signal.SIGTERM)
            for p in ps:
                p.p.wait()
            per = {k: (r1.get(k, 0) - r0.get(k, 0)) * 60 / a.cost_seconds / 3 for k in r1}
            leases = sum(v for k, v in per.items() if k.startswith("leases"))
            events = sum(v for k, v in per.items() if k.startswith("events"))
            verbs = ", ".join(f"{k} {v:.1f}" for k, v in sorted(per.items()) if v > 0.05)
            print(f"| {name} | {leases:.1f} | {events:.1f} | {verbs} |", flush=True)
            out.doc["cost"].append({"name": name, "seconds": a.cost_seconds, "participants": 3,
                                    "per_participant_per_minute": {k: round(v, 2) for k, v in sorted(per.items())}})
            out.save()
        if a.json:
            print(f"raw samples: {a.json}", file=sys.stderr)
    finally:
        srv.close()

if __name__ == "__main__":
    main()
