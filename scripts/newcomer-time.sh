#!/usr/bin/env bash
# Measures the newcomer path: a fresh clone, `make setup demo` in a terminal (tmux), until the
# dashboard's first frame is on the screen. Prints the seconds, when cargo finished, and the CPU
# time the build used (cargo's reaped children: a number a busy machine inflates far less than
# the wall time).
#   scripts/newcomer-time.sh [--repo DIR_OR_URL] [--ref REF] [--timeout SECONDS] [--keep]
# The clone has an empty target directory (a cold build); the cargo registry (~/.cargo) is
# whatever this machine has, warm or not. CARGO_TARGET_DIR is unset for the run. Needs git, tmux.
set -euo pipefail

repo="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
ref=HEAD
timeout=1800
keep=0
while (($#)); do
  case "$1" in
  --repo) repo="$2"; shift 2 ;;
  --ref) ref="$2"; shift 2 ;;
  --timeout) timeout="$2"; shift 2 ;;
  --keep) keep=1; shift ;;
  *) echo "newcomer-time: unknown argument $1 (usage: newcomer-time.sh [--repo R] [--ref REF] [--timeout S] [--keep])" >&2; exit 2 ;;
  esac
done
command -v tmux >/dev/null || { echo "newcomer-time: needs tmux (apt-get install -y tmux)" >&2; exit 1; }

work="$(mktemp -d /tmp/crown-newcomer.XXXXXX)"
session="crown-newcomer-$$"
cleanup() {
  tmux send-keys -t "$session" q 2>/dev/null || true
  sleep 1
  tmux kill-session -t "$session" 2>/dev/null || true
  if ((keep)); then echo "newcomer-time: clone kept in $work/crown" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

now() { date +%s.%N; }
t0="$(now)"
git clone --quiet "$repo" "$work/crown"
git -C "$work/crown" checkout --quiet "$ref"
t_clone="$(now)"

# The newcomer's command, in a real terminal; the pane stays after make ends so a failure shows.
tmux new-session -d -s "$session" -x 120 -y 40 -c "$work/crown" \
  "env -u CARGO_TARGET_DIR make setup demo; echo \"[make exited: \$?]\"; sleep 3600"

t_built=""
frame=""
build_cpu=""
tck="$(getconf CLK_TCK)"
while :; do
  # `cargo run` execs the binary in place (its command line loses the ` -- `): until then its
  # children's CPU time is the build's.
  for p in $(pgrep -f -- 'demo -p' || true); do
    [ "$(readlink "/proc/$p/cwd" 2>/dev/null)" = "$work/crown" ] || continue
    exe="$(basename "$(readlink "/proc/$p/exe" 2>/dev/null)")"
    # cargo exec'd the binary: the build is over.
    if [ "$exe" = crown ] && [ -z "$t_built" ]; then t_built="$(now)"; fi
    [ "$exe" = cargo ] || continue
    st="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
    read -r -a f <<<"${st##*) }"
    build_cpu="$(awk -v u="${f[13]}" -v s="${f[14]}" -v t="$tck" 'BEGIN { printf "%.0f", (u + s) / t }')"
  done
  screen="$(tmux capture-pane -p -t "$session" 2>/dev/null || true)"
  if [ -z "$t_built" ] && grep -qE '^ *Finished .*(release|demo)' <<<"$screen"; then
    t_built="$(now)"
  fi
  # The dashboard's first frame: its title bar and the participants table.
  if grep -q 'crown · election' <<<"$screen" && grep -q 'participants (' <<<"$screen"; then
    frame="$(now)"
    break
  fi
  if grep -q '\[make exited:' <<<"$screen"; then
    echo "newcomer-time: make ended before the dashboard showed:" >&2
    echo "$screen" >&2
    exit 1
  fi
  if awk -v a="$(now)" -v b="$t0" -v t="$timeout" 'BEGIN { exit !(a - b > t) }'; then
    echo "newcomer-time: no dashboard within ${timeout}s:" >&2
    echo "$screen" >&2
    exit 1
  fi
  sleep 0.2
done

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }
echo "clone:               $(secs "$t_clone" "$t0") s"
if [ -n "$t_built" ]; then
  echo "cargo finished:      $(secs "$t_built" "$t0") s (its last line on the screen, or it exec'd the demo)"
fi
echo "first dashboard frame: $(secs "$frame" "$t0") s after the clone started ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
if [ -n "$build_cpu" ]; then
  echo "build CPU time:      ${build_cpu} s user+sys (sampled every 0.2 s until cargo exec'd the demo)"
fi
for b in "$work"/crown/target/*/crown; do
  [ -x "$b" ] && echo "binary:              ${b#"$work"/crown/} $(du -m "$b" | cut -f1) MB"
done
echo "$screen" | head -12
