"""What the benchmark scripts share: percentiles and markdown rows, the raw-sample JSON writer,
/proc readers, Prometheus text parsing, and the loopback servers (etcd-local.sh, kube-test-env.sh).

Imported by scripts/bench-*.py and scripts/plot-bench.py (same directory, so `import benchlib`).
"""
import json, os, platform, re, subprocess, sys, time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ts(s):
    """A log timestamp (2026-11-22T23:18:52.615619Z) as epoch seconds."""
    s = s.rstrip("Z")
    main, _, frac = s.partition(".")
    t = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return t + (float("0." + frac) if frac else 0.0)


def pct(xs, q):
    """Nearest-rank percentile q (0-100) of xs."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def md_row(name, xs, digits=1):
    """`| name | runs | p50 | p90 | p99 | max |` in ms, from samples in seconds."""
    ms = [x * 1000 for x in xs]
    if not ms:
        return f"| {name} | 0 | - | - | - | - |"
    f = lambda v: f"{v:.{digits}f}"
    return f"| {name} | {len(ms)} | {f(pct(ms, 50))} | {f(pct(ms, 90))} | {f(pct(ms, 99))} | {f(max(ms))} |"


def machine():
    kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
    return f"{os.cpu_count()} cores, {kb / 1048576:.1f} GiB, {platform.system()} {platform.release()}"


class Samples:
    """Every raw sample, rewritten to --json PATH after each scenario (a cut-short run keeps what
    it has). `add` keeps the markdown row in `rows` and, with echo, prints it at once."""

    def __init__(self, path, backend, server, tag, digits=1, echo=True):
        self.path, self.tag, self.digits, self.echo = path, tag, digits, echo
        self.rows = []
        self.doc = {"backend": backend, "machine": machine(), "server": server, "scenarios": []}
        self.t = time.time()

    def add(self, name, tool, kind, timings, xs, note=None):
        self.rows.append(md_row(name, xs, self.digits))
        if self.echo:
            print(self.rows[-1], flush=True)
        now = time.time()
        print(f"{self.tag}: {name}: {len(xs)} cycles in {now - self.t:.1f} s", file=sys.stderr, flush=True)
        self.t = now
        sc = {"name": name, "tool": tool, "kind": kind, "timings": timings,
              "samples_ms": [round(x * 1000, 3) for x in xs]}
        if note:
            sc["note"] = note
        self.doc["scenarios"].append(sc)
        self.save()

    def save(self):
        if self.path:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path + ".tmp", "w") as f:
                json.dump(self.doc, f, indent=1, ensure_ascii=False)
            os.replace(self.path + ".tmp", self.path)


# ------------------------------------------------------------------------------------------------
# /proc
# ------------------------------------------------------------------------------------------------

def cpu_ticks(pid):
    """utime + stime of pid, in clock ticks (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError, ValueError):
        return None


def proc_status(pid):
    """VmRSS in KiB and Threads of pid (None, None if it is gone)."""
    rss = threads = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
    except OSError:
        pass
    return rss, threads


# ------------------------------------------------------------------------------------------------
# Prometheus text
# ------------------------------------------------------------------------------------------------

METRIC_LINE = re.compile(r'^(\w+)\{([^}]*)\}\s+(\S+)')
LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse_metrics(text, names):
    """{metric: [(labels, value)]} for the metrics in `names`."""
    out = {}
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if m and m.group(1) in names:
            out.setdefault(m.group(1), []).append((dict(LABEL.findall(m.group(2))), float(m.group(3))))
    return out


# ------------------------------------------------------------------------------------------------
# loopback servers
# ------------------------------------------------------------------------------------------------

ETCD_LOCAL = os.path.join(ROOT, "scripts", "etcd-local.sh")
KUBE_TEST_ENV = os.path.join(ROOT, "scripts", "kube-test-env.sh")


def start_etcd(d, tag, attempts=3):
    """One loopback etcd member via etcd-local.sh in d; its client endpoint. Its free ports are
    chosen before etcd binds them, so a busy machine (tests starting etcds too) can take one
    first: then etcd exits and etcd-local.sh polls its health for minutes. Give each attempt 60 s,
    and try fresh ports up to `attempts` times."""
    for i in range(attempts):
        try:
            r = subprocess.run([ETCD_LOCAL, "start", "--members", "1", "--dir", d], capture_output=True, text=True,
                               timeout=60)
            if r.returncode == 0 and r.stdout.strip():
                return r.stdout.strip()
            err = r.stderr.strip()
        except subprocess.TimeoutExpired:
            err = "not healthy within 60 s"
        stop_etcd(d)
        print(f"{tag}: local etcd did not start (attempt {i + 1}/{attempts}): {err}; logs in {d}", file=sys.stderr)
    raise SystemExit(f"{tag}: could not start a local etcd (see above)")


def stop_etcd(d):
    subprocess.run([ETCD_LOCAL, "stop", "--dir", d], capture_output=True)


class EtcdServer:
    """A one-member loopback etcd in tmp/etcd: endpoints, pid, /metrics text."""

    def __init__(self, tmp, tag):
        self.dir = os.path.join(tmp, "etcd")
        self.eps = start_etcd(self.dir, tag)
        with open(os.path.join(self.dir, "m0.pid")) as f:
            self.server_pids = {"etcd": int(f.read().strip())}
        self.env = None

    def metrics(self, timeout=20):
        import urllib.request
        with urllib.request.urlopen(f"http://{self.eps.split(',')[0]}/metrics", timeout=timeout) as r:
            return r.read().decode()

    def close(self):
        stop_etcd(self.dir)


class KubeServer:
    """A kube-apiserver (and its etcd) from kube-test-env.sh in tmp/kube, with `namespace`
    created; stops with this process (--owner-pid) if it dies without close()."""

    def __init__(self, tmp, namespace):
        self.dir = os.path.join(tmp, "kube")
        self.closed = False
        r = subprocess.run(["bash", KUBE_TEST_ENV, "start", "--dir", self.dir, "--owner-pid", str(os.getpid())],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.close()
            raise RuntimeError(f"kube-test-env.sh start failed:\n{r.stderr[-2000:]}")
        self.envf = {}
        with open(os.path.join(self.dir, "env")) as f:
            for line in f:
                m = re.match(r"export (\w+)=(.*)", line.strip())
                if m:
                    self.envf[m.group(1)] = m.group(2).strip("'\"")
        self.env = dict(os.environ, KUBECONFIG=os.path.join(self.dir, "kubeconfig"))
        self.kubectl = self.envf.get("CROWN_KUBECTL") or "kubectl"
        self.server_pids = {"kube-apiserver": int(self.envf["CROWN_KUBE_APISERVER_PID"]),
                            "apiserver-etcd": int(self.envf["CROWN_ETCD_PID"])}
        subprocess.run([self.kubectl, "create", "namespace", namespace], env=self.env, check=True, capture_output=True)

    def requests(self, timeout=60):
        """apiserver_request_total summed by "resource:verb"."""
        text = subprocess.run([self.kubectl, "get", "--raw", "/metrics"], env=self.env, check=True,
                              capture_output=True, text=True, timeout=timeout).stdout
        out = {}
        for labels, v in parse_metrics(text, {"apiserver_request_total"}).get("apiserver_request_total", []):
            k = labels.get("resource", "") + ":" + labels.get("verb", "?")
            out[k] = out.get(k, 0) + v
        return out

    def close(self):
        if not self.closed:
            self.closed = True
            subprocess.run(["bash", KUBE_TEST_ENV, "stop", "--dir", self.dir], capture_output=True)
