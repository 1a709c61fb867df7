#!/usr/bin/env python3
"""The fenced sink of the Kafka example: processed records and the consumer's offset in one SQLite
database that refuses a write whose term is lower than the highest term it has seen.

Every write is one transaction taken with BEGIN IMMEDIATE (SQLite's write lock, so writers are
serialised; they queue on a flock of DB.lock first, for a fair hand-off): read the highest term seen; if the writer's term is lower, roll back and record the
refusal; else raise the fence to this term, append the record and move the offset, and commit.
The record and the offset move together, so a consumer killed at any instant leaves no record
without its offset or the reverse, and a paused old leader that wakes up after a newer term has
written anything is refused instead of applied.

    sink.py init DB                          # create the tables (the consumer does it too)
    sink.py write DB TERM TOPIC PART OFFSET VALUE   # one write; exit 3 when the fence refuses it
    sink.py status DB                        # JSON: max_term, records in it, offsets, refusals
    sink.py dump DB                          # JSON: max_term, next offsets, processed, refused
"""
import fcntl
import json
import os
import sqlite3
import sys
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS fence (id INTEGER PRIMARY KEY CHECK (id = 1), max_term INTEGER NOT NULL);
INSERT OR IGNORE INTO fence (id, max_term) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS offsets (topic TEXT NOT NULL, part INTEGER NOT NULL,
    next_offset INTEGER NOT NULL, PRIMARY KEY (topic, part));
CREATE TABLE IF NOT EXISTS processed (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
    part INTEGER NOT NULL, off INTEGER NOT NULL, value TEXT NOT NULL, term INTEGER NOT NULL,
    at_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS refused (seq INTEGER PRIMARY KEY AUTOINCREMENT, off INTEGER NOT NULL,
    term INTEGER NOT NULL, max_term INTEGER NOT NULL, at_ns INTEGER NOT NULL);
"""

REFUSED_EXIT = 3


class Fenced(Exception):
    """A write from a term lower than the highest the sink has seen."""

    def __init__(self, term, max_term):
        super().__init__(f"term {term} is lower than term {max_term} already seen")
        self.term = term
        self.max_term = max_term


class Sink:
    def __init__(self, path):
        # isolation_level=None: no implicit transactions; each write is one explicit one.
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.db.execute("PRAGMA journal_mode=WAL")
        # WAL + synchronous=NORMAL: a committed write survives the death of any process (what
        # this example is about); FULL would also cover a power loss, at an fsync per commit.
        self.db.execute("PRAGMA synchronous=NORMAL")
        # Creating the tables takes the write lock, which a busy writer (the old leader's
        # consumer, paused crown) may hold 100 times a second: SQLite's busy wait is not fair,
        # so look first (a WAL read takes no lock) and create only when missing.
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'refused'").fetchone():
            # executescript commits whatever is open first, so the BEGIN goes in the script.
            self.db.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")

    def next_offset(self, topic, part):
        row = self.db.execute(
            "SELECT next_offset FROM offsets WHERE topic = ? AND part = ?", (topic, part)
        ).fetchone()
        return row[0] if row else 0

    def write(self, term, topic, part, offset, value):
        """Applies one record in `term`, or raises Fenced (and records the refusal)."""
        # Writers queue on a blocking flock first: the kernel wakes a waiter as soon as the lock
        # is free, where SQLite's busy handler sleeps and retries, and loses every time against
        # a writer that commits 100 times a second (a new leader's first write waited ~2 s
        # behind the paused leader's consumer).
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        try:
            self._write(term, topic, part, offset, value)
        finally:
            fcntl.flock(self.lock, fcntl.LOCK_UN)

    def _write(self, term, topic, part, offset, value):
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            (max_term,) = db.execute("SELECT max_term FROM fence WHERE id = 1").fetchone()
            if term < max_term:
                db.execute("ROLLBACK")
                db.execute(
                    "INSERT INTO refused (off, term, max_term, at_ns) VALUES (?, ?, ?, ?)",
                    (offset, term, max_term, time.time_ns()),
                )
                raise Fenced(term, max_term)
            if term > max_term:
                db.execute("UPDATE fence SET max_term = ? WHERE id = 1", (term,))
            db.execute(
                "INSERT INTO processed (topic, part, off, value, term, at_ns) VALUES (?, ?, ?, ?, ?, ?)",
                (topic, part, offset, value, term, time.time_ns()),
            )
            db.execute(
                "INSERT INTO offsets (topic, part, next_offset) VALUES (?, ?, ?) "
                "ON CONFLICT (topic, part) DO UPDATE SET next_offset = excluded.next_offset",
                (topic, part, offset + 1),
            )
            db.execute("COMMIT")
        except Fenced:
            raise
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def dump(self):
        db = self.db
        return {
            "max_term": db.execute("SELECT max_term FROM fence").fetchone()[0],
            "offsets": db.execute("SELECT topic, part, next_offset FROM offsets").fetchall(),
            "processed": db.execute(
                "SELECT seq, off, value, term, at_ns FROM processed ORDER BY seq"
            ).fetchall(),
            "refused": db.execute(
                "SELECT seq, off, term, max_term, at_ns FROM refused ORDER BY seq"
            ).fetchall(),
        }


def main(argv):
    if len(argv) >= 2 and argv[0] == "init":
        Sink(argv[1])
        return 0
    if len(argv) == 7 and argv[0] == "write":
        _, path, term, topic, part, offset, value = argv
        try:
            Sink(path).write(int(term), topic, int(part), int(offset), value)
        except Fenced as e:
            print(f"sink: refused: {e}", file=sys.stderr)
            return REFUSED_EXIT
        return 0
    if len(argv) == 2 and argv[0] == "status":
        db = Sink(argv[1]).db
        (max_term,) = db.execute("SELECT max_term FROM fence").fetchone()
        (n,) = db.execute("SELECT count(*) FROM processed WHERE term = ?", (max_term,)).fetchone()
        (total,) = db.execute("SELECT count(DISTINCT off) FROM processed").fetchone()
        refused = dict(db.execute("SELECT term, count(*) FROM refused GROUP BY term").fetchall())
        print(json.dumps({"max_term": max_term, "in_max_term": n, "distinct_offsets": total,
                          "refused_from": {str(t): c for t, c in refused.items()}}))
        return 0
    if len(argv) == 2 and argv[0] == "dump":
        json.dump(Sink(argv[1]).dump(), sys.stdout)
        print()
        return 0
    print("usage: sink.py init DB | write DB TERM TOPIC PART OFFSET VALUE | status DB | dump DB", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
