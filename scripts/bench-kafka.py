#!/usr/bin/env python3
"""Failover of one active Kafka consumer: crown beside Kafka's own consumer-group rebalance.

A real single-node broker (scripts/kafka-local.sh) and a producer (kcat -P) writing numbered
records at a steady rate into one partition. Then, per scenario and cycle, the member that is
consuming is taken down (kill -9, SIGTERM, or SIGSTOP then SIGCONT once another member has taken
over) and the gap is timed from that signal until another member processes its first record.

- crown: 2 `crown run` participants on the file backend, each with examples/kafka/consumer.py as
  its child (partition assigned by hand, offset in the fenced SQLite sink). "Processed" is the
  sink's commit of a record by the new term. Also split: signal → BECAME LEADER (crown's part)
  and BECAME LEADER → first record (the consumer's start: Python, SQLite, kcat's connect).
- group: 2 plain `kcat -G` members of one consumer group, no crown: "processed" is the new
  owner printing its first record. Once with librdkafka's defaults (session.timeout.ms 45 s),
  once tuned to the broker's minimum session timeout (6 s, heartbeat 2 s). Also counted: the
  records the new owner processed again (auto-commit every 5 s) and, for SIGSTOP, the records
  the resumed old member still emitted after another member had taken over (no fence here).

Usage: scripts/bench-kafka.py [--runs 5] [--group-runs 3] [--rate 100] [--bin target/release/crown]
                              [--lease 2s] [--json PATH]
"""
import argparse, json, os, signal, sqlite3, subprocess, sys, tempfile, threading, time

from benchlib import ROOT, Samples, ts

KINDS = [("kill -9", signal.SIGKILL), ("SIGTERM", signal.SIGTERM), ("SIGSTOP", signal.SIGSTOP)]


def log(msg):
    print(f"bench-kafka: {msg}", file=sys.stderr, flush=True)


class Producer:
    def __init__(self, bootstrap, topic, rate):
        self.proc = subprocess.Popen(
            ["kcat", "-P", "-b", bootstrap, "-t", topic, "-p", "0", "-X", "linger.ms=0"],
            stdin=subprocess.PIPE, text=True)
        self.rate, self.n, self.stop = rate, 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        start = time.monotonic()
        while not self.stop:
            due = start + self.n / self.rate
            d = due - time.monotonic()
            if d > 0:
                time.sleep(d)
            # kcat -P reads its input in 1024-byte blocks: one line per block, or records
            # leave in bursts of a kilobyte.
            self.proc.stdin.write(f"{self.n:<1023}\n")
            self.proc.stdin.flush()
            self.n += 1

    def close(self):
        self.stop = True
        self.thread.join()
        self.proc.stdin.close()
        self.proc.wait()


class Crown:
    """One `crown run` participant whose child is the example consumer."""

    def __init__(self, binary, d, pid_id, lease, env):
        self.id, self.events, self.cv = pid_id, [], threading.Condition()
        lease_s = parse_s(lease)
        timings = ["--lease-duration", lease, "--renew-deadline", f"{int(lease_s * 750)}ms",
                   "--retry-period", f"{int(lease_s * 200)}ms", "--grace", f"{int(lease_s * 150)}ms"]
        self.proc = subprocess.Popen(
            [binary, "run", "--log-format", "json", "--id", pid_id, "--dir", d] + timings
            + ["--", "python3", os.path.join(ROOT, "examples/kafka/consumer.py")],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            try:
                j = json.loads(line)
            except ValueError:
                if "consumer[" in line:
                    log(f"{self.id}: {line.strip()}")
                continue
            with self.cv:
                self.events.append(j)
                self.cv.notify_all()

    def became(self, term):
        with self.cv:
            for e in self.events:
                if e.get("event") == "became_leader" and e.get("term") == term:
                    return ts(e["timestamp"])
        return None

    def end(self):
        try:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait()


def parse_s(d):
    return float(d[:-2]) / 1000 if d.endswith("ms") else float(d.rstrip("s"))


def holds_cas_lock(pid, d):
    """Whether pid holds the file backend's CAS flock (E.lock in d), from /proc/locks."""
    inodes = {os.stat(os.path.join(d, f)).st_ino for f in os.listdir(d) if f.endswith(".lock")}
    for line in open("/proc/locks"):
        f = line.split()
        if len(f) >= 6 and f[1] == "FLOCK" and f[4] == str(pid) and int(f[5].rsplit(":", 1)[1]) in inodes:
            return True
    return False


def sink_state(db):
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        (max_term,) = c.execute("SELECT max_term FROM fence").fetchone()
        first = c.execute("SELECT min(at_ns), count(*) FROM processed WHERE term = ?", (max_term,)).fetchone()
        return max_term, first[0], first[1]
    finally:
        c.close()


def wait(what, timeout, f, step=0.01):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = f()
        if v:
            return v
        time.sleep(step)
    raise SystemExit(f"bench-kafka: timed out after {timeout}s waiting for {what}")


def bench_crown(args, bootstrap, samples, work):
    d = os.path.join(work, "crown-lease")
    os.makedirs(d)
    db = os.path.join(work, "sink.db")
    subprocess.run(["python3", os.path.join(ROOT, "examples/kafka/sink.py"), "init", db], check=True)
    env = dict(os.environ, KAFKA_BOOTSTRAP=bootstrap, KAFKA_TOPIC="crown", SINK_DB=db)
    producer = Producer(bootstrap, "crown", args.rate)
    n = 0

    def spawn():
        nonlocal n
        n += 1
        return Crown(args.bin, d, f"c{n}", args.lease, env)

    ps = [spawn(), spawn()]
    try:
        for name, sig in KINDS:
            gaps, elect, start = [], [], []
            for cycle in range(args.runs):
                # The current term's consumer is committing.
                term, _, _ = wait("a committing consumer", 60,
                                  lambda: (lambda s: s if s[2] >= 20 else None)(sink_state(db)))
                victim = next(p for p in ps if p.became(term) is not None)
                if sig == signal.SIGSTOP:
                    while True:
                        t0 = time.time()
                        os.kill(victim.proc.pid, sig)
                        if not holds_cas_lock(victim.proc.pid, d):
                            break
                        # Frozen inside its compare-and-swap: no one else could take over.
                        log(f"{victim.id} paused inside its CAS; resuming and pausing again")
                        os.kill(victim.proc.pid, signal.SIGCONT)
                        time.sleep(0.05)
                else:
                    t0 = time.time()
                    os.kill(victim.proc.pid, sig)
                new_term, first_ns, _ = wait(f"a new term after {name}", 120,
                                             lambda: (lambda s: s if s[0] > term and s[1] else None)(sink_state(db)))
                gap = first_ns / 1e9 - t0
                leader = next(p for p in ps if p.became(new_term) is not None)
                b = leader.became(new_term)
                gaps.append(gap)
                elect.append(b - t0)
                start.append(first_ns / 1e9 - b)
                if sig == signal.SIGSTOP:
                    # Resume once the fence has refused a late write of the frozen leader's consumer.
                    def refused():
                        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
                        try:
                            return c.execute("SELECT count(*) FROM refused WHERE term = ?", (term,)).fetchone()[0]
                        finally:
                            c.close()
                    wait(f"the fence refusing term {term}", 30, refused, step=0.02)
                    os.kill(victim.proc.pid, signal.SIGCONT)
                    with victim.cv:
                        victim.cv.wait_for(lambda: any(e.get("event") == "stopped_leading" and e.get("term") == term
                                                       for e in victim.events), timeout=30)
                else:
                    victim.proc.wait()
                    ps.remove(victim)
                    ps.append(spawn())
                log(f"crown {name} cycle {cycle}: {gap * 1000:.0f} ms (elect {elect[-1] * 1000:.0f}, consumer start {start[-1] * 1000:.0f})")
            timings = {"lease": args.lease, "rate_per_s": args.rate}
            samples.add(f"crown + consumer.py, {name}: signal → first record of the new term", "crown", name, timings, gaps)
            samples.add(f"crown + consumer.py, {name}: signal → BECAME LEADER", "crown", name, timings, elect)
            samples.add(f"crown + consumer.py, {name}: BECAME LEADER → first record", "crown", name, timings, start)
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        dup = c.execute("SELECT count(*) - count(DISTINCT off) FROM processed").fetchone()[0]
        refused = c.execute("SELECT count(*) FROM refused").fetchone()[0]
        c.close()
        samples.doc.setdefault("counts", {})["crown"] = {"duplicates": dup, "refused_late_writes": refused}
        log(f"crown: {dup} records processed twice, {refused} late writes refused by the fence")
    finally:
        for p in ps:
            p.end()
        producer.close()


class GroupMember:
    def __init__(self, bootstrap, topic, group, member_id, extra):
        self.id, self.recs, self.assigned, self.cv = member_id, [], [], threading.Condition()
        self.proc = subprocess.Popen(
            ["kcat", "-C", "-G", group, "-b", bootstrap, "-u", "-f", "%o %s\\n",
             "-X", "auto.offset.reset=earliest", "-X", "fetch.wait.max.ms=20"] + extra + [topic],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._err, daemon=True).start()

    def _out(self):
        for line in self.proc.stdout:
            off = int(line.split(" ", 1)[0])
            with self.cv:
                self.recs.append((time.time(), off))
                self.cv.notify_all()

    def _err(self):
        for line in self.proc.stderr:
            if "assigned:" in line or "rebalanced" in line:
                with self.cv:
                    self.assigned.append((time.time(), line.strip()))
                    self.cv.notify_all()

    def last(self):
        with self.cv:
            return self.recs[-1] if self.recs else (0, -1)

    def end(self):
        try:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait()


def wait_topic(bootstrap, topic):
    """Until the topic has a record: a group member that subscribes before the topic exists
    gets no partition until its next metadata refresh (5 min)."""
    def has_record():
        r = subprocess.run(["kcat", "-C", "-q", "-b", bootstrap, "-t", topic, "-p", "0", "-o", "beginning",
                            "-c", "1", "-e"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return r.returncode == 0 and r.stdout.strip()
    wait(f"topic {topic}", 60, has_record, step=0.2)


def bench_group(args, bootstrap, samples, label, extra, runs, topic):
    producer = Producer(bootstrap, topic, args.rate)
    wait_topic(bootstrap, topic)
    n = 0

    def spawn():
        nonlocal n
        n += 1
        return GroupMember(bootstrap, topic, f"{topic}-group", f"g{n}", extra)

    ms = [spawn(), spawn()]
    dups, stale = [], []
    try:
        for name, sig in KINDS:
            gaps = []
            for cycle in range(runs):
                # Settled: one member has been receiving for a while and both joined.
                def owner():
                    now = time.time()
                    live = [m for m in ms if m.last()[0] > now - 0.2]
                    return live[0] if len(live) == 1 and all(m.assigned for m in ms) else None
                victim = wait("one member receiving", 120, owner, step=0.05)
                time.sleep(0.5)
                other = next(m for m in ms if m is not victim)
                last_off = victim.last()[1]
                t0 = time.time()
                os.kill(victim.proc.pid, sig)
                with other.cv:
                    base = len(other.recs)
                    ok = other.cv.wait_for(lambda: len(other.recs) > base, timeout=120)
                if not ok:
                    raise SystemExit(f"bench-kafka: {label}: no rebalance within 120 s after {name}")
                t1, first_off = other.recs[base]
                gaps.append(t1 - t0)
                dups.append(max(0, last_off - first_off + 1))
                if sig == signal.SIGSTOP:
                    with victim.cv:
                        before = len(victim.recs)
                    os.kill(victim.proc.pid, signal.SIGCONT)
                    time.sleep(1.0)
                    with victim.cv:
                        stale.append(sum(1 for t, _ in victim.recs[before:] if t > t1))
                else:
                    victim.proc.wait()
                    ms.remove(victim)
                    ms.append(spawn())
                log(f"{label} {name} cycle {cycle}: {gaps[-1] * 1000:.0f} ms, re-read {dups[-1]} records")
            samples.add(f"{label}, {name}: signal → first record at the other member", "kcat -G", name,
                         {"extra": extra, "rate_per_s": args.rate}, gaps)
        samples.doc.setdefault("counts", {})[label] = {
            "records_processed_again_per_failover": dups,
            "records_emitted_by_resumed_sigstopped_member": stale}
        log(f"{label}: re-read per failover {dups}; emitted after resume {stale}")
    finally:
        for m in ms:
            m.end()
        producer.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--group-runs", type=int, default=3, help="cycles per kind for each consumer-group variant (0: skip)")
    ap.add_argument("--default-group-runs", type=int, default=None,
                    help="cycles for librdkafka's default 45 s session (default: --group-runs)")
    ap.add_argument("--rate", type=float, default=100.0, help="records per second")
    ap.add_argument("--lease", default="2s")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/crown"))
    ap.add_argument("--json")
    args = ap.parse_args()
    for tool in ("java", "mvn", "kcat"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], stdout=subprocess.DEVNULL).returncode:
            raise SystemExit(f"bench-kafka: {tool} not found: scripts/install-deps.sh --tests")
    work = tempfile.mkdtemp(prefix="crown-bench-kafka-")
    kdir = os.path.join(work, "kafka")
    bootstrap = subprocess.run([os.path.join(ROOT, "scripts/kafka-local.sh"), "start", "--dir", kdir],
                               check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    log(f"broker at {bootstrap}")
    samples = Samples(args.json, "kafka", f"Kafka 4.1 single-node KRaft, kcat {kcat_version()}", "bench-kafka", digits=0)
    try:
        if args.runs:
            bench_crown(args, bootstrap, samples, work)
        tuned = ["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=2000"]
        if args.group_runs:
            bench_group(args, bootstrap, samples, "consumer group, session 6 s", tuned, args.group_runs, "tuned")
        dg = args.group_runs if args.default_group_runs is None else args.default_group_runs
        if dg:
            bench_group(args, bootstrap, samples, "consumer group, librdkafka defaults (session 45 s)", [], dg, "defaults")
    finally:
        subprocess.run([os.path.join(ROOT, "scripts/kafka-local.sh"), "stop", "--dir", kdir])
    print("\n| scenario | runs | p50 ms | p90 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- | --- |")
    print("\n".join(samples.rows))
    print(json.dumps(samples.doc.get("counts", {})))
    samples.save()


def kcat_version():
    out = subprocess.run(["kcat", "-V"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    line = next((l for l in out.splitlines() if l.startswith("Version")), "Version ?")
    return line.split()[1]


if __name__ == "__main__":
    main()
