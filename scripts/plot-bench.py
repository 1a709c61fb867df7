#!/usr/bin/env python3
"""Plots the raw samples the failover benchmarks write with --json, one PNG per backend.

Reads every IN/*.json of the shape scripts/bench-failover.py, bench-etcd.py and bench-kube.py
write ({"backend", "machine", "server", "scenarios": [{"name", "tool", "kind", "timings",
"samples_ms"}]}), and for each backend writes OUT/failover-<backend>.png: one row per scenario,
a box (p25-p75, line at p50, whiskers min-max) over every sample as a dot, on a log x-axis;
crown's rows blue, the reference tool's (flock(1), etcdctl elect, client-go) orange. Prints a
markdown table per backend (scenario | runs | p50 | p90 | p99 | max ms) with the scripts' own
percentile (nearest rank on the sorted samples).

Usage: scripts/plot-bench.py [IN [OUT]]     (defaults: target/bench docs/img)
Needs matplotlib: apt-get install -y python3-matplotlib (or scripts/install-deps.sh --bench).
"""
import argparse, glob, json, os, sys, textwrap

try:
    import matplotlib
except ImportError:
    # Debian's python3-matplotlib is for /usr/bin/python3; `python3` may be another one (pyenv).
    system = "/usr/bin/python3"
    if (os.path.realpath(sys.executable) != os.path.realpath(system) and os.access(system, os.X_OK)
            and not os.environ.get("CROWN_PLOT_REEXEC")):
        os.environ["CROWN_PLOT_REEXEC"] = "1"
        try:
            os.execv(system, [system, os.path.abspath(__file__)] + sys.argv[1:])
        except OSError:
            pass
    sys.exit("plot-bench: matplotlib is missing: apt-get install -y python3-matplotlib "
             "(or scripts/install-deps.sh --bench)")
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

from benchlib import pct  # the scripts' own percentile

CROWN_COLOR = "#1f77b4"
REF_COLOR = "#ff7f0e"
KIND_ORDER = {"graceful": 0, "crash": 1}
REFERENCE = {"file": "flock(1)", "etcd": "etcdctl elect", "kube": "client-go"}


def fmt(v):
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def load(indir):
    """backend -> {"machine", "server", "scenarios"}, files in name order; one backend's files merged."""
    by = {}
    files = sorted(glob.glob(os.path.join(indir, "*.json")))
    for path in files:
        try:
            doc = json.load(open(path))
        except ValueError as e:
            print(f"plot-bench: skipping {path}: {e}", file=sys.stderr)
            continue
        if not isinstance(doc, dict) or "backend" not in doc or "scenarios" not in doc:
            print(f"plot-bench: skipping {path}: not a benchmark result", file=sys.stderr)
            continue
        b = by.setdefault(doc["backend"], {"machine": doc.get("machine", "?"), "servers": [], "scenarios": []})
        if doc.get("server") and doc["server"] not in b["servers"]:
            b["servers"].append(doc["server"])
        b["scenarios"].extend(doc["scenarios"])
    return by


def table(backend, b):
    print(f"### {backend} ({', '.join(b['servers']) or 'server unknown'}; {b['machine']})")
    print()
    print("| scenario | runs | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for sc in b["scenarios"]:
        ms = sc.get("samples_ms") or []
        if not ms:
            print(f"| {sc['name']} | 0 | - | - | - | - |")
            continue
        print(f"| {sc['name']} | {len(ms)} | {pct(ms, 50):.1f} | {pct(ms, 90):.1f} | {pct(ms, 99):.1f} "
              f"| {max(ms):.1f} |")
    for sc in b["scenarios"]:
        if sc.get("note"):
            print(f"\n{sc['note']}")
    print()


def plot(backend, b, out):
    # Graceful rows above crash rows, crown first within each kind; matplotlib counts y upwards.
    scs = sorted(b["scenarios"], key=lambda s: (KIND_ORDER.get(s.get("kind"), 2), s.get("tool") != "crown"))
    n = len(scs)
    fig, ax = plt.subplots(figsize=(11, 1.5 + 0.62 * n))
    ys = list(range(n, 0, -1))
    allv = [max(v, 0.01) for s in scs for v in (s.get("samples_ms") or [])]
    lo, hi = (min(allv) / 2, max(allv) * 2) if allv else (0.1, 10)
    label_tf = blended_transform_factory(ax.transAxes, ax.transData)
    for y, sc in zip(ys, scs):
        ms = [max(v, 0.01) for v in (sc.get("samples_ms") or [])]
        color = CROWN_COLOR if sc.get("tool") == "crown" else REF_COLOR
        if ms:
            ax.boxplot([ms], positions=[y], vert=False, widths=0.55, whis=(0, 100), showfliers=False,
                       patch_artist=True, manage_ticks=False,
                       boxprops=dict(facecolor=color, alpha=0.35, edgecolor=color),
                       medianprops=dict(color="black", linewidth=1.6),
                       whiskerprops=dict(color=color), capprops=dict(color=color))
            # Every sample as a dot, spread vertically by a fixed pseudo-random offset.
            jit = [((i * 0.6180339887) % 1 - 0.5) * 0.35 for i in range(len(ms))]
            ax.scatter(ms, [y + j for j in jit], s=10, color=color, alpha=0.6, linewidths=0, zorder=3)
            stats = f"n={len(ms)}\np50 {fmt(pct(ms, 50))} · p99 {fmt(pct(ms, 99))}\nmax {fmt(max(ms))} ms"
        else:
            stats = "not run (0 samples)"
        ax.text(1.01, y, stats, transform=label_tf, va="center", fontsize=8, linespacing=1.15)
    kinds = [s.get("kind") for s in scs]
    for i in range(1, n):
        if kinds[i] != kinds[i - 1]:
            ax.axhline((ys[i] + ys[i - 1]) / 2, color="0.6", linewidth=0.8, linestyle="--")
    labels = []
    for sc in scs:
        name = sc["name"]
        if sc.get("timings") and sc["timings"] != "-" and sc["timings"] not in name:
            name += f" [{sc['timings']}]"
        labels.append(textwrap.fill(name, 46))
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8.5)
    ax.set_ylim(0.4, n + 0.6)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    if hi / lo < 300:  # under ~2.5 decades: label 1, 2, 5 of each decade, not only the powers of 10
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.6g}"))
    ax.grid(True, axis="x", which="major", color="0.85")
    ax.grid(True, axis="x", which="minor", color="0.94")
    ax.set_axisbelow(True)
    ax.set_xlabel("ms from the signal to the new leader (log scale); box p25–p75, line p50, whiskers min–max, "
                  "dots every sample", fontsize=9)
    ax.set_title(f"crown {backend} backend: failover latency (graceful above, crash below the dashed line)\n"
                 f"{', '.join(b['servers']) or 'server unknown'} · {b['machine']}", fontsize=10)
    fig.tight_layout()
    fig.subplots_adjust(right=0.8)
    fig.legend(handles=[Patch(facecolor=CROWN_COLOR, alpha=0.6, label="crown"),
                        Patch(facecolor=REF_COLOR, alpha=0.6, label=f"reference: {REFERENCE.get(backend, 'other')}")],
               loc="upper right", bbox_to_anchor=(0.995, 0.995), fontsize=8, framealpha=0.9)
    path = os.path.join(out, f"failover-{backend}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    ap = argparse.ArgumentParser(description="Plot target/bench/*.json (from the bench scripts' --json).")
    ap.add_argument("indir", nargs="?", default="target/bench")
    ap.add_argument("outdir", nargs="?", default="docs/img")
    a = ap.parse_args()
    by = load(a.indir)
    if not by:
        sys.exit(f"plot-bench: no benchmark results (*.json) in {a.indir}: run the bench scripts with --json")
    os.makedirs(a.outdir, exist_ok=True)
    for backend in sorted(by, key=lambda k: (list(REFERENCE).index(k) if k in REFERENCE else 9, k)):
        table(backend, by[backend])
        print(f"plot-bench: wrote {plot(backend, by[backend], a.outdir)}", file=sys.stderr)


if __name__ == "__main__":
    main()
