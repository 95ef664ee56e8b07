#!/usr/bin/env python3
"""A tiny webhook receiver for the demo: prints one line per webhook and answers 200.

Usage: receiver.py PORT [LOG_FILE]
"""
import http.server
import json
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            event = json.loads(body)
            line = "{:<14} {:<9} id={} signed={}".format(
                event.get("type"), event.get("organization_id"), event.get("id"),
                "yes" if self.headers.get("webhook-signature") else "no")
        except ValueError:
            line = "not JSON: {!r}".format(body[:80])
        print("webhook received: " + line, flush=True)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.serve_forever()
