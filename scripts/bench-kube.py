#!/usr/bin/env python3
"""crown's Kubernetes Lease backend beside client-go's leaderelection, on one real kube-apiserver.

Starts an apiserver with scripts/kube-test-env.sh, then for crown and for the client-go elector
(tests/interop/client-go, built by scripts/build-clientgo.sh), each alone on a fresh Lease:
- graceful handoff: SIGTERM the leader (crown releases; client-go with --release-on-cancel) →
  the next "became leader" line of another participant;
- crash failover: SIGKILL the leader → the next leader (bounded below by the lease duration);
- cost: apiserver requests per participant per minute (from apiserver_request_total on /metrics,
  resource=leases and events), with 3 participants running for --cost-seconds.
Latencies are from the signal to the line's arrival on our pipe (same host).

Usage: scripts/bench-kube.py [--runs 20] [--crash-runs 10] [--cost-seconds 60]
"""
import argparse, json, os, re, signal, ssl, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CROWN = os.path.join(ROOT, "target", "release", "crown")

class Proc:
    def __init__(self, argv, env, pattern, stream):
        self.events = []
        self.cv = threading.Condition()
        self.pattern = pattern
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

    def led_since(self, t):
        with self.cv:
            return next((e for e in self.events if e >= t), None)

def crown_proc(env, ident, timings):
    return Proc([CROWN, "run", "--backend", "kube", "-n", "bench", "--log-format", "json", "--id", ident] + timings, env,
                lambda l: '"event":"became_leader"' in l, "stderr")

def go_proc(bin_, env, ident, timings):
    return Proc([bin_, "--namespace", "bench", "--lease-name", "crown", "--id", ident, "--release-on-cancel"] + timings, env,
                lambda l: l.startswith(f"STARTED_LEADING id={ident}"), "stdout")

def wait_leader(ps, t, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        hits = [(p.led_since(t), p) for p in ps]
        hits = [h for h in hits if h[0] is not None]
        if hits:
            return min(hits, key=lambda h: h[0])
        time.sleep(0.002)
    raise SystemExit("no leader")

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]

def row(name, xs):
    ms = [x * 1000 for x in xs]
    return f"| {name} | {len(ms)} | {pct(ms,50):.0f} | {pct(ms,90):.0f} | {pct(ms,99):.0f} | {max(ms):.0f} |"

def kubectl(env, *args):
    return subprocess.run(["kubectl", *args], env=env, check=True, capture_output=True, text=True).stdout

def requests(env):
    text = kubectl(env, "get", "--raw", "/metrics")
    total = {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("resource") in ("leases", "events"):
                key = labels["resource"] + ":" + labels["verb"]
                total[key] = total.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return total

def cycles(make, n_runs, sig, timings_env):
    env, mk = timings_env
    ps = [make(i) for i in range(3)]
    nxt = 3
    t = time.time()
    lat = []
    _, leader = wait_leader(ps, t - 3600)
    for _ in range(n_runs):
        time.sleep(0.5)  # let followers observe the current leader
        others = [p for p in ps if p is not leader]
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
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--crash-runs", type=int, default=10)
    ap.add_argument("--cost-seconds", type=int, default=60)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    go_bin = subprocess.run(["bash", os.path.join(ROOT, "scripts/build-clientgo.sh")], check=True, capture_output=True, text=True).stdout.strip()
    d = tempfile.mkdtemp(prefix="crown-bench-kube-")
    subprocess.run(["bash", os.path.join(ROOT, "scripts/kube-test-env.sh"), "start", "--dir", d], check=True, capture_output=True)
    try:
        env = dict(os.environ, KUBECONFIG=os.path.join(d, "kubeconfig"))
        kubectl(env, "create", "namespace", "bench")
        fast = ["--lease-duration", "2s", "--renew-deadline", "1500ms", "--retry-period", "500ms"]
        defaults_crown = ["--lease-duration", "5s", "--renew-deadline", "3s", "--retry-period", "1s"]
        defaults_go = ["--lease-duration", "15s", "--renew-deadline", "10s", "--retry-period", "2s"]
        rows = []
        def fresh():
            subprocess.run(["kubectl", "-n", "bench", "delete", "lease", "--all"], env=env, capture_output=True)
        for name, mk, timings in [
            ("crown", lambda t: (lambda i: crown_proc(env, f"c{time.time_ns()}", t)), None),
            ("client-go", lambda t: (lambda i: go_proc(go_bin, env, f"g{time.time_ns()}", t)), None),
        ]:
            fresh()
            rows.append(row(f"{name}: graceful handoff (SIGTERM), 2s/1.5s/0.5s", cycles(mk(fast), a.runs, signal.SIGTERM, (env, None))))
            fresh()
            rows.append(row(f"{name}: crash failover (kill -9), 2s/1.5s/0.5s", cycles(mk(fast), a.crash_runs, signal.SIGKILL, (env, None))))
        fresh()
        rows.append(row("client-go: graceful handoff (SIGTERM), its defaults 15s/10s/2s",
                        cycles(lambda i: go_proc(go_bin, env, f"g{time.time_ns()}", defaults_go), max(5, a.runs // 4), signal.SIGTERM, (env, None))))
        print(f"kube-apiserver {open(os.path.join(d, 'env')).read().split('CROWN_KUBE_VERSION=')[1].split()[0]}, 3 participants, same machine")
        print("| scenario | runs | p50 ms | p90 ms | p99 ms | max ms |")
        print("|---|---|---|---|---|---|")
        print("\n".join(rows))
        print()
        print(f"| apiserver requests per participant per minute ({a.cost_seconds}s, 3 participants) | leases | events | by verb |")
        print("|---|---|---|---|")
        for name, make, timings in [("crown 5s/3s/1s", lambda i: crown_proc(env, f"k{i}", defaults_crown), None),
                                    ("crown 2s/1.5s/0.5s", lambda i: crown_proc(env, f"f{i}", fast), None),
                                    ("client-go 15s/10s/2s", lambda i: go_proc(go_bin, env, f"g{i}", defaults_go), None),
                                    ("client-go 2s/1.5s/0.5s", lambda i: go_proc(go_bin, env, f"h{i}", fast), None)]:
            fresh()
            ps = [make(i) for i in range(3)]
            time.sleep(5)  # settle: one leader, members published
            r0 = requests(env)
            time.sleep(a.cost_seconds)
            r1 = requests(env)
            for p in ps:
                p.p.send_signal(signal.SIGTERM)
            for p in ps:
                p.p.wait()
            per = {k: (r1.get(k, 0) - r0.get(k, 0)) * 60 / a.cost_seconds / 3 for k in r1}
            leases = sum(v for k, v in per.items() if k.startswith("leases"))
            events = sum(v for k, v in per.items() if k.startswith("events"))
            verbs = ", ".join(f"{k} {v:.1f}" for k, v in sorted(per.items()) if v > 0.05)
            print(f"| {name} | {leases:.1f} | {events:.1f} | {verbs} |")
    finally:
        subprocess.run(["bash", os.path.join(ROOT, "scripts/kube-test-env.sh"), "stop", "--dir", d], capture_output=True)

if __name__ == "__main__":
    main()
