#!/bin/sh
# The "leader-only job" of examples/double-dialer.sh: dials (prints a line) every 0.2 s while
# it runs, and records "start TERM ID" / "stop TERM ID" in $DIAL_LOG. crown starts it when its
# participant is granted the lease and stops it (SIGTERM, then SIGKILL after --grace) on loss.
log=${DIAL_LOG:-/tmp/crown-dial.log}
echo "$(date +%T.%N | cut -c1-12) start $CROWN_TERM $CROWN_ID" >> "$log"
trap 'echo "$(date +%T.%N | cut -c1-12) stop $CROWN_TERM $CROWN_ID" >> "$log"; exit 0' TERM INT
while :; do
    echo "[$CROWN_ID] dialing (term $CROWN_TERM)"
    sleep 0.2
done
