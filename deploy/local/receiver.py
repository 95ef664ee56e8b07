#!/usr/bin/env python3
"""The demo's webhook receiver: verifies each webhook's Standard Webhooks signature with the
`standardwebhooks` package (PyPI), writes one line per webhook to a log file, and counts.

Usage:
  receiver.py --log FILE --port-file FILE [--port 0] [--secret ORG=ENV_VAR]...

- POST /<org>: verified with the signing secret in environment variable ENV_VAR when
  `--secret <org>=ENV_VAR` names one; answers 204 when the signature is valid (or no secret
  was given for the organization: "unchecked"), 401 when it is not.
- GET /stats: {"received", "distinct", "duplicates", "verified", "failed", "unchecked"} as JSON.
- docker-compose.yml loads only the `Handler` class (no secrets, lines on stdout), so the
  module must import without `standardwebhooks` installed.
- The port actually bound (useful with --port 0) is written to --port-file once listening.

Counting is exact: the handler threads update the counters and append their line under one
lock, each line with a single write(2) on a file opened with O_APPEND, so lines never merge
(printing from several threads can interleave, which is how the demo once counted 13 of 14).
"""
import argparse
import http.server
import json
import os
import sys
import threading


class Receiver:
    """Counters and the log, shared by the handler threads."""

    def __init__(self, log_fd=1, verifiers=None):
        self.lock = threading.Lock()
        self.log_fd = log_fd
        # organization -> a standardwebhooks.Webhook for its secret
        self.verifiers = verifiers or {}
        self.ids = set()
        self.counts = {"received": 0, "duplicates": 0, "verified": 0, "failed": 0, "unchecked": 0}

    def record(self, event_id, verdict, line):
        with self.lock:
            self.counts["received"] += 1
            if event_id in self.ids:
                self.counts["duplicates"] += 1
            elif event_id is not None:
                self.ids.add(event_id)
            self.counts[verdict] += 1
            os.write(self.log_fd, (line + "\n").encode())

    def stats(self):
        with self.lock:
            return dict(self.counts, distinct=len(self.ids))


class Handler(http.server.BaseHTTPRequestHandler):
    """One webhook per POST. Without secrets (e.g. docker-compose.yml, which loads this class
    alone) it logs to stdout and checks no signature."""

    receiver = Receiver()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        org = self.path.strip("/").split("/")[0]
        verifier = self.receiver.verifiers.get(org)
        verdict, detail = "unchecked", ""
        if verifier is not None:
            # Imported here so that the class also loads where the package is not installed.
            from standardwebhooks.webhooks import WebhookVerificationError
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                verifier.verify(body, headers)
                verdict = "verified"
            except WebhookVerificationError as e:
                verdict, detail = "failed", str(e)
        try:
            event = json.loads(body)
            event_type, event_id = event.get("type"), event.get("id")
            owner = event.get("organization_id")
        except ValueError:
            event_type, event_id, owner = "not JSON", None, None
        line = "webhook received: {:<9} {:<14} {:<8} id={}{}".format(
            verdict, str(event_type), str(owner), event_id, " (" + detail + ")" if detail else "")
        self.receiver.record(event_id, verdict, line)
        self.send_response(401 if verdict == "failed" else 204)
        self.end_headers()

    def do_GET(self):
        if self.path != "/stats":
            self.send_error(404)
            return
        body = json.dumps(self.receiver.stats()).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    # The service opens up to `concurrency` connections per endpoint at once; socketserver's
    # default backlog of 5 would reset some of them.
    request_queue_size = 128
    daemon_threads = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--secret", action="append", default=[], metavar="ORG=ENV_VAR")
    args = parser.parse_args()

    from standardwebhooks.webhooks import Webhook

    verifiers = {}
    for item in args.secret:
        org, _, var = item.partition("=")
        if not org or not var or not os.environ.get(var):
            sys.exit("receiver.py: --secret {!r}: expected ORG=ENV_VAR with ENV_VAR set".format(item))
        verifiers[org] = Webhook(os.environ[var])

    log_fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    Handler.receiver = Receiver(log_fd, verifiers)
    server = Server(("127.0.0.1", args.port), Handler)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
