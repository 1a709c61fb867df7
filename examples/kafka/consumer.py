#!/usr/bin/env python3
"""The consumer crown runs while it leads: reads one partition from the offset stored in the
fenced sink and writes every record, tagged with CROWN_TERM, into that sink.

    crown run ... -- python3 consumer.py

Environment: CROWN_TERM (set by crown), KAFKA_BOOTSTRAP (host:port), KAFKA_TOPIC (orders),
KAFKA_PARTITION (0), SINK_DB (path of the SQLite sink, see sink.py).

Not a consumer group: crown already guarantees that one consumer is active, so the partition is
assigned by hand (`kcat -C -p P -o OFFSET`) and the position lives in the sink, committed in the
same transaction as the record. A new leader starts at once from the last committed offset; there
is no group session timeout to wait out (45 s by default when the old member was killed without
leaving the group) and no rebalance. A paused old leader whose consumer is still running is
refused by the sink as soon as the new term has written anything: this consumer then stops
reading and waits for crown to stop it.

kcat runs as our child with the parent-death signal set, so it dies with us even when we are
SIGKILLed (crown sets the same on us: crown killed -9 takes both down).
"""
import ctypes
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sink  # noqa: E402

PR_SET_PDEATHSIG = 1


def die_with_parent():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(126)
    # The parent may have died between fork and prctl: then we are someone else's child.
    if os.getppid() != parent_pid:
        os._exit(126)


parent_pid = os.getpid()


STARTED = time.monotonic()


def log(msg):
    ms = (time.monotonic() - STARTED) * 1000
    print(f"consumer[term {os.environ.get('CROWN_TERM', '?')}] +{ms:.0f}ms: {msg}", file=sys.stderr, flush=True)


def main():
    try:
        term = int(os.environ["CROWN_TERM"])
        bootstrap = os.environ["KAFKA_BOOTSTRAP"]
        db_path = os.environ["SINK_DB"]
    except (KeyError, ValueError) as e:
        log(f"error: CROWN_TERM, KAFKA_BOOTSTRAP and SINK_DB must be set ({e!r})")
        return 2
    topic = os.environ.get("KAFKA_TOPIC", "orders")
    part = int(os.environ.get("KAFKA_PARTITION", "0"))

    # SIGTERM from crown (leadership ends): stop between two writes, never inside one.
    def on_term(_sig, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)

    store = sink.Sink(db_path)
    while True:
        # kcat exits when the topic does not exist yet or the broker goes away: start it again
        # from the sink's offset (nothing was lost: the offset moves only with a write).
        offset = store.next_offset(topic, part)
        log(f"reading {topic}/{part} from offset {offset}")
        if consume(store, term, bootstrap, topic, part, offset) == "fenced":
            log("waiting for crown to stop me")
            signal.pause()
            return 0
        time.sleep(0.5)


def consume(store, term, bootstrap, topic, part, offset):
    kcat = subprocess.Popen(
        ["kcat", "-C", "-q", "-u", "-b", bootstrap, "-t", topic, "-p", str(part),
         "-o", str(offset), "-f", "%o %s\\n",
         # Hand the next record over as soon as it is there (librdkafka waits up to 500 ms).
         "-X", "fetch.wait.max.ms=20"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    first = True
    try:
        for line in kcat.stdout:
            off, _, value = line.decode("utf-8", "replace").rstrip("\n").partition(" ")
            if first:
                log(f"first record from kcat (offset {off})")
            try:
                store.write(term, topic, part, int(off), value)
                if first:
                    log(f"first record committed (offset {off})")
                    first = False
            except sink.Fenced as e:
                log(f"fenced: {e}")
                return "fenced"
        log(f"kcat exited with {kcat.wait()}; starting it again")
        return "eof"
    finally:
        if kcat.poll() is None:
            kcat.kill()
            kcat.wait()

if __name__ == "__main__":
    sys.exit(main())
