#!/usr/bin/env python3
"""First load of slotpack's /dashboard in headless Chromium.

Drives Chromium over its DevTools protocol (a small websocket client of
its own: the standard library only) and, for each run, opens about:blank
and then the dashboard with the token in the URL fragment, and reads what
the page itself noted: `document.body.dataset.loadedMs`, the time from
navigation start (performance.timeOrigin) until its tenant table was
built, laid out and painted, and `dataset.rows`, the rows it shows.

Each run also prints what the page noted on the way: DOMContentLoaded,
the time `GET /api/tenants` took (`dataset.apiMs`) and the time its script
took to build the rows (`dataset.renderMs`); BENCH_VERBOSE=1 adds the
navigation timing and the page's performance marks.

Usage: dashboard.py URL TOKEN ROWS [RUNS] [SCREENSHOT.png]
Prints one line per run, then the median and range.
"""

import base64
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request


class DevTools:
    """One websocket to one page target; call() waits for its answer."""

    def __init__(self, ws_url):
        u = urllib.parse.urlparse(ws_url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            b = self.sock.recv(1)
            if not b:
                raise RuntimeError("devtools closed during the handshake")
            head += b
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"devtools handshake: {head!r}")
        self.next_id = 0

    def _read(self, n):
        out = b""
        while len(out) < n:
            b = self.sock.recv(n - len(out))
            if not b:
                raise RuntimeError("devtools closed")
            out += b
        return out

    def _send(self, payload, opcode=1):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n <= 0xFFFF:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def _message(self):
        data = b""
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            payload = self._read(n)
            if opcode == 0x9:  # ping
                self._send(payload, 0xA)
                continue
            if opcode == 0x8:
                raise RuntimeError("devtools closed the websocket")
            data += payload
            if b0 & 0x80:
                return json.loads(data)

    def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        self._send(json.dumps({"id": mid, "method": method, "params": params}).encode())
        while True:
            m = self._message()
            if m.get("id") == mid:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")


def start_chromium(profile):
    proc = subprocess.Popen(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--window-size=1600,1000",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # A process group of its own, ended whole at the end.
        start_new_session=True,
    )
    for line in proc.stderr:
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:
            # Drained from here on, so that Chromium never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, m.group(1)
    raise RuntimeError("chromium ended before it listened")


def page_target(browser_ws):
    u = urllib.parse.urlparse(browser_ws)
    with urllib.request.urlopen(f"http://{u.hostname}:{u.port}/json/list", timeout=10) as r:
        targets = json.load(r)
    return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")


def wait(dt, what, f, limit=30.0):
    deadline = time.monotonic() + limit
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(dt)


def main():
    url, token, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    shot = sys.argv[5] if len(sys.argv) > 5 else None
    profile = tempfile.mkdtemp(prefix="slotpack-bench-chromium-")
    proc = None
    try:
        proc, browser_ws = start_chromium(profile)
        dt = DevTools(page_target(browser_ws))
        dt.call("Page.enable")
        dt.call("Runtime.enable")
        page = f"{url}/dashboard#token={urllib.parse.quote(token)}"
        loads = []
        # One warm-up load (Chromium's own first start of its renderer),
        # then the measured runs.
        for run in range(runs + 1):
            dt.call("Page.navigate", url="about:blank")
            wait(0.005, "about:blank", lambda: dt.eval("location.href") == "about:blank")
            dt.call("Page.navigate", url=page)
            got = wait(
                0.005,
                "the table",
                lambda: dt.eval(
                    "document.body && document.body.dataset.loadedMs"
                    " ? [Number(document.body.dataset.loadedMs), Number(document.body.dataset.apiMs),"
                    " Number(document.body.dataset.rows),"
                    " performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,"
                    " Number(document.body.dataset.renderMs),"
                    " JSON.stringify(performance.getEntriesByType('navigation')[0])]"
                    " : null"
                ),
            )
            loaded, api_ms, shown, dcl, render_ms, nav = got
            if os.environ.get("BENCH_VERBOSE"):
                marks = dt.eval(
                    "JSON.stringify(performance.getEntriesByType('mark').map(m => [m.name, m.startTime]))"
                )
                print(f"navigation {nav}\nmarks {marks}")
            if shown != rows:
                raise RuntimeError(f"the page shows {shown} rows, want {rows}")
            if run == 0:
                print(f"warm-up: {loaded:.1f} ms")
                continue
            loads.append(loaded)
            print(
                f"run {run}: {loaded:6.1f} ms to {shown} rows painted"
                f" (DOMContentLoaded {dcl:5.1f} ms, GET /api/tenants {api_ms:5.1f} ms,"
                f" building the table {render_ms:4.1f} ms)"
            )
        print(
            f"first load, {rows} tenants, {runs} runs: median {statistics.median(loads):.1f} ms,"
            f" range {min(loads):.1f}-{max(loads):.1f} ms"
        )
        if shot:
            png = dt.call("Page.captureScreenshot", format="png")["data"]
            with open(shot, "wb") as f:
                f.write(base64.b64decode(png))
            print(f"screenshot: {shot}")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
