#!/usr/bin/env python3
"""crown at scale: many participants over many elections on ONE etcd, then ONE kube-apiserver.

--participants (200) `crown run` processes spread round-robin over --elections (10) elections
(20 each), crown's default timings (5s/3s/1s), on one single-member etcd (scripts/etcd-local.sh)
and then one kube-apiserver (scripts/kube-test-env.sh; one namespace, one Lease per election,
named by it). For each backend:

1. start them (--stagger between starts) and wait until every election has a leader and every
   other participant follows its term (etcd: and has its candidate key queued);
2. steady load over --steady-seconds (60): backend requests (etcd: grpc_server_started_total and
   grpc_server_msg_received_total by method; kube: apiserver_request_total, all resources and
   leases/events by verb) as requests/s and per participant per minute; the server processes'
   CPU % (utime+stime delta, of one core) and RSS (etcd; kube-apiserver and its etcd); the sum of
   the participants' RSS and CPU; leadership changes seen during the window;
3. --rounds (5) rounds of graceful handoff: SIGTERM the leader of every election at once, and per
   election time signal → another participant's BECAME LEADER with a higher term (its log
   timestamp; the arrival on our pipe is kept too); the victims are replaced so the count stays;
4. --crash-rounds (1) rounds of crash failover: the same with SIGKILL (bounded below by the lease
   duration / session TTL, 5 s).
Reports p50/p90/p99/max over elections × rounds as markdown tables; --json writes everything.

Every participant and server is stopped at the end, also on Ctrl-C, SIGTERM or an error
(participants run in their own process group, killed as a group at the end).

Usage: scripts/bench-scale.py [--participants 200] [--elections 10] [--rounds 5] [--crash-rounds 1]
                              [--steady-seconds 60] [--backends etcd,kube] [--json PATH]
                              [--stagger 0.02] [--bin target/release/crown]
"""
import argparse, json, os, re, resource, selectors, shutil, signal, subprocess, sys, tempfile, threading, time

from benchlib import EtcdServer, KubeServer, cpu_ticks, parse_metrics, pct, proc_status, ts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HZ = os.sysconf("SC_CLK_TCK")
TIMINGS = ["--lease-duration", "5s", "--renew-deadline", "3s", "--retry-period", "1s"]
INTERESTING = {"became_leader", "follower", "stopped_leading", "stopped", "no_leader", "lost"}


def log(msg):
    print(f"bench-scale: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# /proc
# ------------------------------------------------------------------------------------------------

# ------------------------------------------------------------------------------------------------
# participants: one reader thread multiplexes every stderr pipe with a selector
# ------------------------------------------------------------------------------------------------

class Participant:
    def __init__(self, ident, election, proc):
        self.id = ident
        self.election = election
        self.proc = proc
        self.pid = proc.pid
        self.buf = b""
        self.events = []      # (arrival time.time(), event dict), interesting events only
        self.role = None      # "leader" | "follower" | None
        self.term = None      # term of its last became_leader / follower line
        self.victim = False   # we signalled it
        self.exited = False   # its pipe closed


class Fleet:
    def __init__(self, binary, backend_args, env):
        self.binary = binary
        self.backend_args = backend_args
        self.env = env
        self.all = []                # every participant ever started
        self.cv = threading.Condition()
        self.pgids = []
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.pending = []            # participants to register (handed to the reader thread)
        self.closing = False
        self.lines = 0
        self.reader = threading.Thread(target=self._read, name="reader", daemon=True)
        self.reader.start()

    # -- processes -------------------------------------------------------------------------
    def start(self, ident, election):
        argv = [self.binary, "run", *self.backend_args, "--election", election, "--id", ident,
                "--log-format", "json", *TIMINGS]
        proc = None
        if self.pgids:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, env=self.env, process_group=self.pgids[-1])
            except (PermissionError, ProcessLookupError, OSError):
                proc = None  # that group is gone: start a new one
        if proc is None:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=self.env, process_group=0)
            self.pgids.append(proc.pid)
        p = Participant(ident, election, proc)
        os.set_blocking(proc.stderr.fileno(), False)
        with self.cv:
            self.all.append(p)
            self.pending.append(p)
        os.write(self.wake_w, b"x")
        return p

    def stop_all(self, grace=15):
        """SIGTERM every live participant, wait, then SIGKILL stragglers and the process groups."""
        live = [p for p in self.all if p.proc.poll() is None]
        for p in live:
            try:
                p.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for p in live:
            try:
                p.proc.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        killed = 0
        for p in self.all:
            if p.proc.poll() is None:
                killed += 1
                try:
                    p.proc.kill()
                except ProcessLookupError:
                    pass
        for g in self.pgids:
            try:
                os.killpg(g, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p in self.all:
            try:
                p.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if killed:
            log(f"{killed} participants did not stop within {grace}s of SIGTERM: SIGKILLed")
        self.closing = True
        os.write(self.wake_w, b"x")
        self.reader.join(5)
        for p in self.all:
            try:
                p.proc.stderr.close()
            except OSError:
                pass
        self.sel.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    # -- the reader thread -----------------------------------------------------------------
    def _read(self):
        while not self.closing:
            for key, _ in self.sel.select(1.0):
                if key.data is None:
                    try:
                        os.read(self.wake_r, 4096)
                    except BlockingIOError:
                        pass
                    with self.cv:
                        new, self.pending = self.pending, []
                    for p in new:
                        self.sel.register(p.proc.stderr.fileno(), selectors.EVENT_READ, p)
                    continue
                p = key.data
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    self.sel.unregister(key.fd)
                    with self.cv:
                        p.exited = True
                        self.cv.notify_all()
                    continue
                p.buf += chunk
                *lines, p.buf = p.buf.split(b"\n")
                now = time.time()
                with self.cv:
                    for line in lines:
                        self.lines += 1
                        if b'"event"' not in line or b"leader_heartbeat" in line:
                            continue
                        try:
                            e = json.loads(line)
                        except ValueError:
                            continue
                        ev = e.get("event")
                        if ev not in INTERESTING:
                            continue
                        p.events.append((now, e))
                        if ev == "became_leader":
                            p.role, p.term = "leader", e.get("term")
                        elif ev == "follower":
                            p.role, p.term = "follower", e.get("term")
                        elif ev in ("stopped_leading", "stopped", "lost", "no_leader"):
                            if ev != "no_leader" or p.role != "leader":
                                p.role = None
                    self.cv.notify_all()

    # -- queries (call with self.cv held) -------------------------------------------------
    def alive(self, election=None):
        return [p for p in self.all if not p.exited and p.proc.poll() is None and not p.victim
                and (election is None or p.election == election)]

    def leader_of(self, election):
        """(participant, term) of the highest became_leader term among live participants."""
        best = None
        for p in self.alive(election):
            if p.role == "leader" and (best is None or p.term > best[1]):
                best = (p, p.term)
        return best

    def settled(self, election):
        lt = self.leader_of(election)
        if not lt:
            return False
        leader, term = lt
        return all(p is leader or (p.role == "follower" and p.term == term) for p in self.alive(election))


# ------------------------------------------------------------------------------------------------
# backends
# ------------------------------------------------------------------------------------------------

def diff(c0, c1):
    return {k: c1[k] - c0.get(k, 0) for k in c1 if c1[k] - c0.get(k, 0) > 0}


class Etcd(EtcdServer):
    name = "etcd"

    def __init__(self, tmp):
        super().__init__(tmp, "bench-scale")
        self.args = ["--backend", "etcd", "--endpoints", self.eps]
        self.ctl_env = dict(os.environ, ETCDCTL_API="3")
        log(f"etcd at {self.eps} (pid {self.server_pids['etcd']})")

    def counters(self):
        m = parse_metrics(self.metrics(timeout=20), {"grpc_server_started_total", "grpc_server_msg_received_total"})
        out = {}
        for metric, kind in (("grpc_server_started_total", "rpc"), ("grpc_server_msg_received_total", "msg")):
            for labels, v in m.get(metric, []):
                if labels.get("grpc_service", "").startswith("grpc.health"):
                    continue
                k = f"{kind}:{labels.get('grpc_method', '?')}"
                out[k] = out.get(k, 0) + v
        return out

    def summarize(self, d):
        """(requests counted as load, breakdown) from a counter diff."""
        rpcs = {k[4:]: v for k, v in d.items() if k.startswith("rpc:")}
        msgs = {k[4:]: v for k, v in d.items() if k.startswith("msg:")}
        return sum(rpcs.values()), {"rpcs_started": rpcs, "messages_received": msgs}

    def queued(self, prefix):
        """Candidate keys per election (etcd: `<election>/<lease id>`)."""
        r = subprocess.run(["etcdctl", "--endpoints", self.eps, "get", "--prefix", prefix, "--keys-only"],
                           capture_output=True, text=True, env=self.ctl_env, timeout=30)
        out = {}
        for line in r.stdout.splitlines():
            m = re.match(r"^(" + re.escape(prefix) + r"\d+)/[0-9a-f]+$", line.strip())
            if m:
                out[m.group(1)] = out.get(m.group(1), 0) + 1
        return out


class Kube(KubeServer):
    name = "kube"
    NAMESPACE = "bench-scale"

    def __init__(self, tmp):
        super().__init__(tmp, self.NAMESPACE)
        self.args = ["--backend", "kube", "--namespace", self.NAMESPACE]
        log(f"kube-apiserver {self.envf.get('CROWN_KUBE_VERSION')} on port {self.envf.get('CROWN_KUBE_APISERVER_PORT')} "
            f"(pid {self.server_pids['kube-apiserver']}, etcd pid {self.server_pids['apiserver-etcd']})")

    def counters(self):
        return self.requests(timeout=60)

    def summarize(self, d):
        crown = {k: v for k, v in d.items() if k.split(":")[0] in ("leases", "events")}
        return sum(crown.values()), {"leases_events_by_verb": crown, "all_resources_total": sum(d.values()),
                                     "all_by_resource_verb": d}

    def queued(self, _prefix):
        return None


BACKENDS = {"etcd": Etcd, "kube": Kube}


# ------------------------------------------------------------------------------------------------
# the benchmark
# ------------------------------------------------------------------------------------------------

def summary(ms):
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50": round(pct(ms, 50), 1), "p90": round(pct(ms, 90), 1),
            "p99": round(pct(ms, 99), 1), "max": round(max(ms), 1), "mean": round(sum(ms) / len(ms), 1)}


class Bench:
    def __init__(self, a, be):
        self.a = a
        self.be = be
        self.elections = [f"{a.prefix}{i}" for i in range(a.elections)]
        self.fleet = Fleet(a.bin, be.args, be.env)
        self.seq = {e: 0 for e in self.elections}
        self.unexpected_exits = []

    def spawn(self, election):
        i = self.seq[election]
        self.seq[election] += 1
        return self.fleet.start(f"{election}-p{i}", election)

    def check_exits(self):
        with self.fleet.cv:
            for p in self.fleet.all:
                if not p.victim and p.proc.poll() is not None and p.id not in self.unexpected_exits:
                    self.unexpected_exits.append(p.id)
                    log(f"warning: participant {p.id} (pid {p.pid}) exited by itself with {p.proc.returncode}")

    def wait_settled(self, what, timeout):
        """Every election: a leader, every other live participant following its term; etcd: every
        live participant's candidate key queued. Returns the seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        last_q = 0.0
        while True:
            self.check_exits()
            with self.fleet.cv:
                pending = [e for e in self.elections if not self.fleet.settled(e)]
                want = {e: len(self.fleet.alive(e)) for e in self.elections}
            if not pending and time.monotonic() - last_q > 0.2:
                last_q = time.monotonic()
                q = self.be.queued(self.a.prefix)
                if q is None:
                    return time.monotonic() - t0
                short = [e for e in self.elections if q.get(e, 0) < want[e]]
                if not short:
                    return time.monotonic() - t0
                pending = [f"{e} (queued {q.get(e, 0)}/{want[e]})" for e in short]
            if time.monotonic() > deadline:
                with self.fleet.cv:
                    detail = []
                    for e in pending[:5]:
                        e0 = e.split()[0]
                        lt = self.fleet.leader_of(e0)
                        roles = {}
                        for p in self.fleet.alive(e0):
                            roles[f"{p.role}@{p.term}"] = roles.get(f"{p.role}@{p.term}", 0) + 1
                        detail.append(f"{e}: leader {lt[0].id + '@' + str(lt[1]) if lt else None}, roles {roles}")
                raise RuntimeError(f"timed out after {timeout}s waiting for {what}; unsettled: " + "; ".join(detail))
            with self.fleet.cv:
                self.fleet.cv.wait(0.05)

    def start_all(self):
        t0 = time.monotonic()
        for k in range(self.a.participants):
            self.spawn(self.elections[k % len(self.elections)])
            if self.a.stagger:
                time.sleep(self.a.stagger)
        started = time.monotonic() - t0
        s = self.wait_settled("every election to have a leader and settled followers", self.a.settle_timeout)
        total = time.monotonic() - t0
        log(f"{self.a.participants} participants started in {started:.1f}s; all {len(self.elections)} elections "
            f"settled {total:.1f}s after the first start")
        return {"start_seconds": round(started, 2), "settled_seconds_after_first_start": round(total, 2),
                "settle_wait_seconds": round(s, 2)}

    def steady(self):
        a, be = self.a, self.be
        with self.fleet.cv:
            parts = list(self.fleet.alive())
            n = len(parts)
        server = be.server_pids
        srv_rss = {k: [] for k in server}
        part_rss = []

        def sample():
            for k, pid in server.items():
                r = proc_status(pid)[0]
                if r is not None:
                    srv_rss[k].append(r)
            vals = [proc_status(p.pid)[0] for p in parts]
            part_rss.append(sum(v for v in vals if v is not None))

        c0 = be.counters()
        t0 = time.monotonic()
        tw0 = time.time()
        srv_c0 = {k: cpu_ticks(p) for k, p in server.items()}
        part_c0 = {p.pid: cpu_ticks(p.pid) for p in parts}
        end = t0 + a.steady_seconds
        while True:
            sample()
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(a.sample_interval, left))
        wall = time.monotonic() - t0
        srv_c1 = {k: cpu_ticks(p) for k, p in server.items()}
        part_c1 = {p.pid: cpu_ticks(p.pid) for p in parts}
        c1 = be.counters()
        d = diff(c0, c1)
        load, breakdown = be.summarize(d)
        with self.fleet.cv:
            changes = [(p.id, e.get("event"), e.get("term")) for p in self.fleet.all for t, e in p.events
                       if t >= tw0 and e.get("event") in ("became_leader", "stopped_leading")]
        pcpu = sum(part_c1[k] - part_c0[k] for k in part_c0 if part_c0[k] is not None and part_c1[k] is not None)
        out = {
            "seconds": round(wall, 2), "participants": n,
            "requests": round(load, 1),
            "requests_per_second": round(load / wall, 2),
            "requests_per_participant_per_minute": round(load / wall * 60 / n, 2),
            "breakdown_per_participant_per_minute": {
                grp: ({k: round(v / wall * 60 / n, 2) for k, v in vals.items()} if isinstance(vals, dict) else
                      round(vals / wall * 60 / n, 2))
                for grp, vals in breakdown.items() if grp != "all_by_resource_verb"},
            "raw_counter_delta": d,
            "server": {k: {"pid": server[k],
                           "cpu_pct_one_core": None if srv_c0[k] is None or srv_c1[k] is None else
                           round((srv_c1[k] - srv_c0[k]) / HZ / wall * 100, 2),
                           "rss_max_mib": round(max(srv_rss[k]) / 1024, 1) if srv_rss[k] else None,
                           "rss_mean_mib": round(sum(srv_rss[k]) / len(srv_rss[k]) / 1024, 1) if srv_rss[k] else None}
                       for k in server},
            "participants_rss_sum_mib": {"max": round(max(part_rss) / 1024, 1), "mean": round(sum(part_rss) / len(part_rss) / 1024, 1),
                                         "per_participant_mean": round(sum(part_rss) / len(part_rss) / 1024 / n, 2)},
            "participants_cpu_pct_one_core_total": round(pcpu / HZ / wall * 100, 2),
            "leadership_changes": changes,
        }
        if be.name == "kube":
            out["all_apiserver_requests_per_second"] = round(breakdown["all_resources_total"] / wall, 2)
        return out

    def round_(self, sig, label, r):
        """Signal every election's leader at once; per election, signal → successor's BECAME LEADER."""
        self.wait_settled(f"{label} round {r}: settled elections", self.a.settle_timeout)
        targets = {}
        with self.fleet.cv:
            for e in self.elections:
                targets[e] = self.fleet.leader_of(e)
        t0 = {}
        for e, (v, term) in targets.items():
            with self.fleet.cv:
                v.victim = True
            t0[e] = time.time()
            os.kill(v.pid, sig)
        results = {}
        deadline = time.monotonic() + self.a.round_timeout
        while len(results) < len(targets) and time.monotonic() < deadline:
            with self.fleet.cv:
                for e, (v, term) in targets.items():
                    if e in results:
                        continue
                    best = None
                    for p in self.fleet.all:
                        if p.election != e or p is v:
                            continue
                        for t, ev in p.events:
                            if ev.get("event") == "became_leader" and ev.get("term", 0) > term and t >= t0[e] - 1:
                                if best is None or t < best[0]:
                                    best = (t, ev, p)
                                break
                    if best:
                        t, ev, p = best
                        results[e] = {"election": e, "round": r, "old": v.id, "old_term": term, "new": p.id,
                                      "new_term": ev["term"], "ms": round((ts(ev["timestamp"]) - t0[e]) * 1000, 2),
                                      "arrival_ms": round((t - t0[e]) * 1000, 2)}
                if len(results) < len(targets):
                    self.fleet.cv.wait(0.02)
        failed = [e for e in targets if e not in results]
        for e in failed:
            log(f"warning: {label} round {r}: no new leader in {e} within {self.a.round_timeout}s")
        for e, (v, _) in targets.items():
            try:
                v.proc.wait(30)
            except subprocess.TimeoutExpired:
                log(f"warning: {v.id} still running 30s after the signal: SIGKILL")
                v.proc.kill()
                v.proc.wait()
        for e in targets:  # keep the count
            self.spawn(e)
            if self.a.stagger:
                time.sleep(self.a.stagger)
        ms = [x["ms"] for x in results.values()]
        log(f"{label} round {r}: {len(results)}/{len(targets)} elections, max {max(ms) if ms else '-'} ms")
        return list(results.values()), failed

    def run(self):
        res = {"backend": self.be.name, "participants": self.a.participants, "elections": len(self.elections),
               "timings": TIMINGS}
        res["startup"] = self.start_all()
        log(f"steady window {self.a.steady_seconds:g}s")
        res["steady"] = self.steady()
        for label, sig, rounds in (("handoff", signal.SIGTERM, self.a.rounds),
                                   ("crash", signal.SIGKILL, self.a.crash_rounds)):
            all_r, all_f = [], []
            for r in range(rounds):
                got, failed = self.round_(sig, label, r)
                all_r += got
                all_f += [{"election": e, "round": r} for e in failed]
            res[label] = {"rounds": rounds, "results": all_r, "failed": all_f,
                          "summary_ms": summary([x["ms"] for x in all_r]),
                          "summary_arrival_ms": summary([x["arrival_ms"] for x in all_r])}
        res["unexpected_exits"] = list(self.unexpected_exits)
        res["log_lines_read"] = self.fleet.lines
        return res


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------

def fmt(x):
    return "-" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.1f}")


def tables(results, a):
    out = [f"### crown at scale: {a.participants} participants over {a.elections} elections "
           f"({a.participants // max(1, a.elections)} each), defaults 5s/3s/1s", "",
           "| backend | scenario | n | p50 ms | p90 ms | p99 ms | max ms | failed |",
           "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for label, what in (("handoff", f"graceful handoff (SIGTERM all {a.elections} leaders at once → BECAME LEADER), "
                                        f"{a.rounds} round{'s' if a.rounds != 1 else ''}"),
                            ("crash", f"crash failover (kill -9 all {a.elections} leaders at once → BECAME LEADER), "
                                      f"{a.crash_rounds} round{'s' if a.crash_rounds != 1 else ''}")):
            s = r[label]["summary_ms"]
            out.append(f"| {r['backend']} | {what} | {s['n']} | {fmt(s.get('p50'))} | {fmt(s.get('p90'))} | "
                       f"{fmt(s.get('p99'))} | {fmt(s.get('max'))} | {len(r[label]['failed'])} |")
    out += ["", f"### steady load ({a.steady_seconds:g} s window, all elections led)", "",
            "| backend | requests/s | per participant per min | by method (per participant per min) | server CPU % of one core | "
            "server RSS MiB | participants' RSS sum MiB | participants' CPU % total | leader changes |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        st = r["steady"]
        b = st["breakdown_per_participant_per_minute"]
        if r["backend"] == "etcd":
            by = ", ".join(f"{k} {v:.1f}" for k, v in sorted(b["rpcs_started"].items(), key=lambda kv: -kv[1]) if v >= 0.05)
            req = f"{st['requests_per_second']:.1f} gRPC"
        else:
            by = ", ".join(f"{k} {v:.1f}" for k, v in sorted(b["leases_events_by_verb"].items(), key=lambda kv: -kv[1]) if v >= 0.05)
            req = f"{st['requests_per_second']:.1f} leases+events ({st['all_apiserver_requests_per_second']:.1f} all)"
        cpu = ", ".join(f"{k} {v['cpu_pct_one_core']:.1f}" for k, v in st["server"].items())
        rss = ", ".join(f"{k} {v['rss_max_mib']:.0f}" for k, v in st["server"].items())
        prss = st["participants_rss_sum_mib"]
        out.append(f"| {r['backend']} | {req} | {st['requests_per_participant_per_minute']:.1f} | {by} | {cpu} | {rss} | "
                   f"{prss['mean']:.0f} ({prss['per_participant_mean']:.1f} each) | "
                   f"{st['participants_cpu_pct_one_core_total']:.1f} | {len(st['leadership_changes'])} |")
    out += ["", "| backend | participants started in | all elections settled after first start |", "|---|---|---|"]
    for r in results:
        out.append(f"| {r['backend']} | {r['startup']['start_seconds']:.1f} s | {r['startup']['settled_seconds_after_first_start']:.1f} s |")
    return "\n".join(out)


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(4096, 8 * n + 256)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < 2 * n + 64:
        log(f"warning: RLIMIT_NOFILE hard limit {hard} is low for {n} participants")
    return want


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", type=int, default=200)
    ap.add_argument("--elections", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5, help="graceful handoff rounds (default 5)")
    ap.add_argument("--crash-rounds", type=int, default=1, help="kill -9 rounds (default 1)")
    ap.add_argument("--steady-seconds", type=float, default=60)
    ap.add_argument("--backends", default="etcd,kube", help="comma-separated: etcd,kube (default both)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--stagger", type=float, default=0.02, help="seconds between participant starts (default 0.02)")
    ap.add_argument("--sample-interval", type=float, default=2.0, help="RSS sampling in the steady window (default 2 s)")
    ap.add_argument("--settle-timeout", type=float, default=300)
    ap.add_argument("--round-timeout", type=float, default=60)
    ap.add_argument("--prefix", default="scale-", help="election names are PREFIX0..PREFIX{n-1}")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "crown"))
    a = ap.parse_args()
    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    for b in backends:
        if b not in BACKENDS:
            ap.error(f"unknown backend {b!r} (etcd, kube)")
    if a.elections < 1 or a.participants < 2 * a.elections:
        ap.error("need at least 2 participants per election")
    if not os.path.exists(a.bin):
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    nofile = raise_nofile(a.participants)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored

    tmp = tempfile.mkdtemp(prefix="crown-bench-scale-")
    started = time.time()
    results = []
    log(f"{a.participants} participants, {a.elections} elections, {a.rounds} handoff rounds, {a.crash_rounds} crash "
        f"rounds, steady {a.steady_seconds:g}s; RLIMIT_NOFILE {nofile}")
    try:
        for b in backends:
            bt0 = time.time()
            be = bench = None
            try:
                be = BACKENDS[b](tmp)
                bench = Bench(a, be)
                r = bench.run()
                r["wall_seconds"] = round(time.time() - bt0, 1)
                results.append(r)
                log(f"{b}: done in {r['wall_seconds']:.0f}s")
            finally:
                if bench:
                    bench.fleet.stop_all()
                if be:
                    be.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(tables(results, a))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"tool": "scripts/bench-scale.py", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                       "wall_seconds": round(time.time() - started, 1), "args": vars(a), "nproc": os.cpu_count(),
                       "results": results}, f, indent=2)
            f.write("\n")
        log(f"wrote {a.json}")


if __name__ == "__main__":
    main()
