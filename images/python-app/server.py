"""A small third-party-style web app for slotpack's tests: a legacy
one-container tenant written in Python, not by slotpack.

It listens on $HOST:$PORT (defaults 0.0.0.0:8080, as such images do) and
answers:
  GET /api/v1/ping  {"status": "pong"}
  GET /whoami       its uid, working folder and environment, as JSON
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/api/v1/ping":
            self.answer({"status": "pong"})
        elif self.path == "/whoami":
            self.answer({"uid": os.getuid(), "cwd": os.getcwd(), "env": dict(os.environ)})
        else:
            self.answer({"error": "not found"}, 404)

    def answer(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    host = os.environ.get("HOST", "0.0.0.0")
    port = int(os.environ.get("PORT", "8080"))
    print(f"listening on {host}:{port}", flush=True)
    ThreadingHTTPServer((host, port), Handler).serve_forever()
