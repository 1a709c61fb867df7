#!/usr/bin/env python3
"""A webhook receiver for `crown run --notify-url`: toggles a "consumer" on each POST.

    examples/notify-receiver.py [PORT]          # default 8099
    crown run --notify-url http://127.0.0.1:8099/ ...

crown POSTs {"leader": bool, "id": ..., "term": N, "election": ...} on every change of its
role, in order; this receiver starts its consumer when leader is true and stops it when false,
ignoring notices for terms older than the last one it acted on (the term is a fencing token).
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

state = {"consuming": False, "term": 0}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            n = json.loads(body)
            leader, term = bool(n["leader"]), int(n["term"])
        except (ValueError, KeyError, TypeError):
            self.send_response(400)
            self.end_headers()
            return
        if term >= state["term"]:
            state["term"] = term
            state["consuming"] = leader
            verb = "START" if leader else "STOP"
            print(f"{verb} consumer ({n.get('id')}, term {term}, election {n.get('election')})", flush=True)
        else:
            print(f"ignored stale notice for term {term} < {state['term']}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8099
    print(f"listening on http://127.0.0.1:{port}/", flush=True)
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
