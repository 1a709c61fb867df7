#!/bin/sh
# Test child for tests/sidecar.rs: appends "start TERM PID NS OTHERS" and, on SIGTERM,
# "stop TERM PID NS" to LOG after 0.2 s of cleanup (so a lease released before the child is
# gone shows up as overlap). OTHERS counts the other shells running this script (same
# directory) when it started: at most one child may be alive at any instant, so it must be 0.
# (No command substitution around the scan: a subshell would count itself.)
log=$1
dir=${0%/*}
grep -l -a -e "$dir/[c]hild.sh" /proc/[0-9]*/cmdline > "$log.$$" 2>/dev/null
others=0
while read -r f; do
    p=${f#/proc/}
    p=${p%/cmdline}
    # crown's own command line names the script too: count only the shells running it.
    comm=
    read -r comm < "/proc/$p/comm" 2>/dev/null || continue
    [ "$p" != "$$" ] && [ "$comm" = sh ] && others=$((others + 1))
done < "$log.$$"
rm -f "$log.$$"
echo "start $CROWN_TERM $$ $(date +%s%N) $others" >> "$log"
trap 'sleep 0.2; echo "stop $CROWN_TERM $$ $(date +%s%N)" >> "$log"; exit 0' TERM
while :; do sleep 0.05; done
