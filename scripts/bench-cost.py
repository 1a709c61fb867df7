#!/usr/bin/env python3
"""What a crown participant costs while it leads and while it follows, per backend.

For each backend (file, etcd, kube) and each timing set (crown's defaults 5s/3s/1s, and the fast
2s/1.5s/0.5s), start --participants (3) `crown run` on one fresh election, wait until they have
settled (a BECAME LEADER line, every other participant's FOLLOWER line for that term, then the
leader's next heartbeat), and measure over --seconds:

- the leader and one follower, separately: RSS (VmRSS from /proc/PID/status, sampled every
  --sample-interval; max and mean) and CPU (utime+stime from /proc/PID/stat, delta over the
  window, as % of one core);
- the backend's requests per participant per minute:
  - etcd: grpc_server_started_total from etcd's /metrics (plain http on the client port), by
    method (LeaseKeepAlive, Range, Put, Campaign, Watch, ...); a LeaseKeepAlive or Watch stream
    counts once when it starts, so grpc_server_msg_received_total (messages, streams included)
    is reported too;
  - kube: apiserver_request_total from the apiserver's /metrics, resource leases and events, by
    verb (like scripts/bench-kube.py);
  - file: not applicable (no server: a local file and flock). Instead the lease file's
    replacements (a new inode or mtime; polled every 50 ms) and member heartbeat file writes are
    counted, per participant per minute;
- the server process's CPU % and RSS (etcd; kube-apiserver) over the same window, for scale.

The window is flagged unstable if leadership changed during it. Prints markdown tables; --json
writes everything. Servers are started here: etcd with scripts/etcd-local.sh (one member), the
kube-apiserver with scripts/kube-test-env.sh (its cached binary; `build` it first).

Usage: scripts/bench-cost.py [--seconds 60] [--json PATH] [--backends file,etcd,kube]
                             [--participants 3] [--sample-interval 0.5] [--bin target/release/crown]
"""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, threading, time

from benchlib import EtcdServer, KubeServer, cpu_ticks, parse_metrics, proc_status

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HZ = os.sysconf("SC_CLK_TCK")
TIMINGS = [
    ("defaults 5s/3s/1s", ["--lease-duration", "5s", "--renew-deadline", "3s", "--retry-period", "1s"]),
    ("fast 2s/1.5s/0.5s", ["--lease-duration", "2s", "--renew-deadline", "1500ms", "--retry-period", "500ms"]),
]


def log(msg):
    print(f"bench-cost: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# /proc
# ------------------------------------------------------------------------------------------------

class Sampler:
    """Samples RSS of some pids every `interval` seconds in a thread; CPU from start/stop deltas."""

    def __init__(self, pids, interval):
        self.pids = dict(pids)  # name -> pid
        self.interval = interval
        self.rss = {n: [] for n in self.pids}
        self.threads = {n: None for n in self.pids}
        self.stop_ev = threading.Event()
        self.t0 = time.monotonic()
        self.c0 = {n: cpu_ticks(p) for n, p in self.pids.items()}
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _sample(self):
        for n, p in self.pids.items():
            rss, thr = proc_status(p)
            if rss is not None:
                self.rss[n].append(rss)
                self.threads[n] = thr

    def _run(self):
        self._sample()
        while not self.stop_ev.wait(self.interval):
            self._sample()

    def stop(self):
        self._sample()
        wall = time.monotonic() - self.t0
        c1 = {n: cpu_ticks(p) for n, p in self.pids.items()}
        self.stop_ev.set()
        self.th.join()
        out = {}
        for n, p in self.pids.items():
            xs = self.rss[n]
            cpu = None
            if self.c0[n] is not None and c1[n] is not None and wall > 0:
                cpu = (c1[n] - self.c0[n]) / HZ / wall * 100
            out[n] = {
                "pid": p,
                "rss_max_kib": max(xs) if xs else None,
                "rss_mean_kib": round(sum(xs) / len(xs), 1) if xs else None,
                "rss_samples": len(xs),
                "cpu_pct_one_core": None if cpu is None else round(cpu, 3),
                "cpu_seconds": None if cpu is None else round((c1[n] - self.c0[n]) / HZ, 3),
                "threads": self.threads[n],
            }
        return out, wall


# ------------------------------------------------------------------------------------------------
# participants
# ------------------------------------------------------------------------------------------------

class Crown:
    def __init__(self, binary, backend_args, election, ident, timings, env=None):
        self.id = ident
        self.events = []  # (arrival monotonic, json)
        self.cv = threading.Condition()
        # Heartbeats (leader_heartbeat) are DEBUG lines.
        env = dict(os.environ if env is None else env, CROWN_LOG="info,crown=debug")
        self.proc = subprocess.Popen(
            [binary, "run", *backend_args, "--election", election, "--id", ident, "--log-format", "json", *timings],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            try:
                j = json.loads(line)
            except ValueError:
                continue
            with self.cv:
                self.events.append((time.monotonic(), j))
                self.cv.notify_all()

    def find(self, pred, since=0.0):
        with self.cv:
            for t, e in self.events:
                if t >= since and pred(e):
                    return t, e
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)


def wait_for(ps, pred, what, timeout, since=0.0):
    """Waits until pred holds for some event of some participant in ps: returns (p, t, event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in ps:
            hit = p.find(pred, since)
            if hit:
                return p, hit[0], hit[1]
            if p.proc.poll() is not None:
                raise RuntimeError(f"participant {p.id} exited with {p.proc.returncode} while waiting for {what}")
        time.sleep(0.01)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def settle(ps, timeout=60):
    """A leader, every other participant following its term, then the leader's next heartbeat."""
    leader, _, e = wait_for(ps, lambda e: e.get("event") == "became_leader", "a leader", timeout)
    term = e["term"]
    for p in ps:
        if p is leader:
            continue
        wait_for([p], lambda e: e.get("event") == "follower" and e.get("term") == term,
                 f"{p.id} to follow term {term}", timeout)
    now = time.monotonic()
    try:
        wait_for([leader], lambda e: e.get("event") == "leader_heartbeat" and e.get("term") == term,
                 "the leader's next heartbeat", 15, since=now)
    except RuntimeError as err:
        log(f"warning: {err}")
    return leader, term


def stop_all(ps, grace=10):
    for p in ps:
        p.stop()
    deadline = time.monotonic() + grace
    for p in ps:
        try:
            p.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()


# ------------------------------------------------------------------------------------------------
# backends
# ------------------------------------------------------------------------------------------------

class FileBackend:
    name = "file"

    def __init__(self, tmp, _args):
        self.dir = os.path.join(tmp, "file")
        os.makedirs(self.dir, exist_ok=True)
        self.args = ["--backend", "file", "--dir", self.dir]
        self.env = None
        self.server_pids = {}
        self.poll_stop = None

    def begin(self, election, ids=()):
        """Counts lease-file replacements and member heartbeat writes by polling (50 ms). Only
        stat(2): opening a file or listing the directory would itself wake crown's inotify watch."""
        self.counts = {"lease_file_replacements": 0, "member_file_writes": 0}
        self.poll_stop = threading.Event()
        lease = os.path.join(self.dir, election + ".lease")
        members = os.path.join(self.dir, election + ".members")

        def sig(path):
            try:
                st = os.stat(path)
                return (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                return None

        def run():
            files = [os.path.join(members, f"{i}.json") for i in ids]
            last_lease = sig(lease)
            last_members = {f: sig(f) for f in files}
            while not self.poll_stop.wait(0.05):
                s = sig(lease)
                if s != last_lease:
                    self.counts["lease_file_replacements"] += 1
                    last_lease = s
                for f in files:
                    s = sig(f)
                    if s is not None and s != last_members[f]:
                        self.counts["member_file_writes"] += 1
                        last_members[f] = s

        self.poll_th = threading.Thread(target=run, daemon=True)
        self.poll_th.start()

    def end(self):
        self.poll_stop.set()
        self.poll_th.join()
        return dict(self.counts)

    def close(self):
        pass


class EtcdBackend(EtcdServer):
    name = "etcd"

    def __init__(self, tmp, _args):
        super().__init__(tmp, "bench-cost")
        self.args = ["--backend", "etcd", "--endpoints", self.eps]
        log(f"etcd at {self.eps} (pid {self.server_pids['etcd']})")

    def counters(self):
        m = parse_metrics(self.metrics(timeout=10), {"grpc_server_started_total", "grpc_server_msg_received_total"})
        out = {"started": {}, "msg_received": {}}
        for metric, key in (("grpc_server_started_total", "started"), ("grpc_server_msg_received_total", "msg_received")):
            for labels, v in m.get(metric, []):
                if labels.get("grpc_service", "").startswith("grpc.health"):
                    continue
                meth = labels.get("grpc_method", "?")
                out[key][meth] = out[key].get(meth, 0) + v
        return out

    def begin(self, _election, _ids=()):
        self.c0 = self.counters()

    def end(self):
        c1 = self.counters()
        return {k: {m: c1[k][m] - self.c0[k].get(m, 0) for m in c1[k] if c1[k][m] - self.c0[k].get(m, 0) > 0}
                for k in c1}


class KubeBackend(KubeServer):
    name = "kube"

    def __init__(self, tmp, _args):
        super().__init__(tmp, "bench")
        self.args = ["--backend", "kube", "--namespace", "bench"]
        log(f"kube-apiserver {self.envf.get('CROWN_KUBE_VERSION')} on port {self.envf.get('CROWN_KUBE_APISERVER_PORT')}")

    def counters(self):
        return {k: v for k, v in self.requests(timeout=None).items() if k.split(":")[0] in ("leases", "events")}

    def begin(self, _election, _ids=()):
        self.c0 = self.counters()

    def end(self):
        c1 = self.counters()
        return {"requests": {k: c1[k] - self.c0.get(k, 0) for k in c1 if c1[k] - self.c0.get(k, 0) > 0}}


BACKENDS = {"file": FileBackend, "etcd": EtcdBackend, "kube": KubeBackend}


# ------------------------------------------------------------------------------------------------
# one measurement
# ------------------------------------------------------------------------------------------------

def measure(a, be, tname, timings, seq):
    election = f"cost-{tname.split()[0]}-{os.getpid()}-{seq}"
    ps = []
    try:
        for i in range(a.participants):
            ps.append(Crown(a.bin, be.args, election, f"{be.name[0]}{seq}-p{i}", timings, be.env))
            time.sleep(0.05)
        t_start = time.monotonic()
        leader, term = settle(ps)
        settle_s = time.monotonic() - t_start
        follower = next(p for p in ps if p is not leader)
        log(f"{be.name} {tname}: leader {leader.id} term {term}, settled in {settle_s:.2f}s; measuring {a.seconds}s")
        pids = {"leader": leader.proc.pid, "follower": follower.proc.pid}
        pids.update(be.server_pids)
        be.begin(election, [p.id for p in ps])
        t0 = time.monotonic()
        sampler = Sampler(pids, a.sample_interval)
        time.sleep(a.seconds)
        stats, wall = sampler.stop()
        counts = be.end()
        changes = [(p.id, e.get("event"), e.get("term")) for p in ps
                   for _, e in [h for h in p.events if h[0] >= t0]
                   if e.get("event") in ("became_leader", "stopped_leading")]
        per_min = 60.0 / wall / a.participants
        run = {
            "backend": be.name, "timings": tname, "timing_args": timings, "participants": a.participants,
            "election": election, "seconds": round(wall, 3), "settle_seconds": round(settle_s, 3),
            "leader": dict(stats["leader"], id=leader.id, term=term),
            "follower": dict(stats["follower"], id=follower.id),
            "server": {n: stats[n] for n in be.server_pids},
            "stable": not changes, "leadership_changes": changes,
        }
        if be.name == "etcd":
            run["requests_delta"] = counts
            run["requests_per_participant_per_min"] = {m: round(v * per_min, 2) for m, v in counts["started"].items()}
            run["messages_per_participant_per_min"] = {m: round(v * per_min, 2) for m, v in counts["msg_received"].items()}
        elif be.name == "kube":
            run["requests_delta"] = counts["requests"]
            run["requests_per_participant_per_min"] = {k: round(v * per_min, 2) for k, v in counts["requests"].items()}
        else:
            run["requests_per_participant_per_min"] = None
            run["file_writes_delta"] = counts
            run["file_writes_per_participant_per_min"] = {k: round(v * per_min, 2) for k, v in counts.items()}
        return run
    finally:
        stop_all(ps)


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------

def mib(kib):
    return "-" if kib is None else f"{kib / 1024:.1f}"


def pct_s(x):
    return "-" if x is None else f"{x:.2f}"


def tables(runs, a):
    lines = [f"### crown resource use ({a.participants} participants per election, {a.seconds:g} s window, "
             f"RSS sampled every {a.sample_interval:g} s)", "",
             "| backend | timings | role | RSS max MiB | RSS mean MiB | CPU % of one core | threads | stable |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for role in ("leader", "follower"):
            s = r[role]
            lines.append(f"| {r['backend']} | {r['timings']} | {role} | {mib(s['rss_max_kib'])} | {mib(s['rss_mean_kib'])} "
                         f"| {pct_s(s['cpu_pct_one_core'])} | {s['threads']} | {'yes' if r['stable'] else 'NO'} |")
    lines += ["", f"### backend requests per participant per minute ({a.participants} participants, "
              f"{a.seconds:g} s window)", "",
              "| backend | timings | requests / participant / min | by method (RPCs or resource:verb) | server CPU % / RSS MiB |",
              "|---|---|---|---|---|"]
    for r in runs:
        srv = ", ".join(f"{n} {pct_s(s['cpu_pct_one_core'])}% / {mib(s['rss_max_kib'])}" for n, s in r["server"].items()) or "-"
        if r["backend"] == "file":
            w = r["file_writes_per_participant_per_min"]
            lines.append(f"| file | {r['timings']} | n/a (no server) | lease file replaced "
                         f"{w['lease_file_replacements']:.1f}, member heartbeat files written "
                         f"{w['member_file_writes']:.1f} (per participant per min; polled) | - |")
            continue
        req = r["requests_per_participant_per_min"]
        total = sum(req.values())
        by = ", ".join(f"{k} {v:.1f}" for k, v in sorted(req.items(), key=lambda kv: -kv[1]) if v >= 0.05)
        if r["backend"] == "etcd":
            msgs = r["messages_per_participant_per_min"]
            streams = {k: v for k, v in msgs.items() if abs(v - req.get(k, 0)) > 0.1 * max(v, 1)}
            if streams:
                by += "; messages received on streams: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(streams.items()))
        lines.append(f"| {r['backend']} | {r['timings']} | {total:.1f} | {by} | {srv} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60, help="measurement window per run (default 60)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--backends", default="file,etcd,kube", help="comma-separated: file,etcd,kube (default all)")
    ap.add_argument("--participants", type=int, default=3)
    ap.add_argument("--sample-interval", type=float, default=0.5, help="RSS sampling interval in seconds")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "crown"))
    a = ap.parse_args()
    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    for b in backends:
        if b not in BACKENDS:
            ap.error(f"unknown backend {b!r} (file, etcd, kube)")
    if a.participants < 2:
        ap.error("--participants must be >= 2 (a leader and a follower)")
    if not os.path.exists(a.bin):
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored

    tmp = tempfile.mkdtemp(prefix="crown-bench-cost-")
    runs, started = [], time.time()
    try:
        for b in backends:
            be = BACKENDS[b](tmp, a)
            try:
                for seq, (tname, timings) in enumerate(TIMINGS):
                    runs.append(measure(a, be, tname, timings, seq))
            finally:
                be.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = tables(runs, a)
    print(out)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"tool": "scripts/bench-cost.py", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                       "wall_seconds": round(time.time() - started, 1), "seconds": a.seconds,
                       "participants": a.participants, "sample_interval": a.sample_interval,
                       "nproc": os.cpu_count(), "clk_tck": HZ, "runs": runs}, f, indent=2)
            f.write("\n")
        log(f"wrote {a.json}")


if __name__ == "__main__":
    main()
