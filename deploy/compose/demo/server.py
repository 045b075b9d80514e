"""A tiny demo target for docker compose: a shop home page and a health API
that can be made slow or failing on command, so the prober has something to
catch. Standard library only.

  curl localhost:8000/control/fail         # every page answers 503 from now on
  curl localhost:8000/control/slow?ms=1500 # every page waits 1.5 s first
  curl localhost:8000/control/ok           # back to normal
"""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

STATE = {"mode": "ok", "delay_ms": 0}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server_version = "demo-shop/1"

    def do_GET(self):
        url = urlparse(self.path)
        if url.path.startswith("/control/"):
            return self.control(url.path.removeprefix("/control/"), parse_qs(url.query))
        with LOCK:
            mode, delay_ms = STATE["mode"], STATE["delay_ms"]
        if delay_ms:
            time.sleep(delay_ms / 1000)
        if mode == "fail":
            return self.send(503, "text/plain", b"Internal Server Error: the demo was told to fail\n")
        if url.path == "/":
            return self.send(200, "text/html", b"<html><head><title>Demo shop</title></head><body>hello</body></html>")
        if url.path == "/api/health":
            body = json.dumps({"status": "ok", "checks": {"database": "up"}}).encode()
            return self.send(200, "application/json", body)
        return self.send(404, "text/plain", b"no such page\n")

    def control(self, what, query):
        with LOCK:
            if what == "fail":
                STATE.update(mode="fail", delay_ms=0)
            elif what == "slow":
                STATE.update(mode="ok", delay_ms=int(query.get("ms", ["1500"])[0]))
            elif what == "ok":
                STATE.update(mode="ok", delay_ms=0)
            else:
                return self.send(404, "text/plain", b"use /control/fail, /control/slow?ms=N or /control/ok\n")
            body = json.dumps(STATE).encode()
        self.send(200, "application/json", body + b"\n")

    def send(self, code, content_type, body):
        self.send_response(code)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    print(f"demo target on :{port}; GET /control/fail, /control/slow?ms=1500, /control/ok", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
