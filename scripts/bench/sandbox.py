#!/usr/bin/env python3
"""The slot sandbox's costs and its CPU isolation, measured on a real agent.

  start100   PUT of 100 programs (each with its cgroup, namespaces, Landlock
             and socket guard when the agent runs as root) -> all running
  cpu100     the agent's CPU (% of one core) over 20 s with 100 test-tenant
             programs pinged over HTTP every second, with and without 14,000
             extra TCP sockets open on the host
  rss100     the agent's resident memory with those 100 programs
  p99        a neighbour's request latency (p99 over 2,000 requests) idle, and
             beside a slot spinning 64 processes, each slot given 500
             millicores; and the same with the sandbox off (no cgroups: an
             agent run as a user), the peer of the figure
Usage: sandbox.py AGENT_BIN TEST_TENANT_BIN OUT_JSON
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from agent_vs_supervisord import free_port, rss_kib

# 64 spinning processes (threads would share one GIL).
SPIN = "import os\nfor _ in range(63):\n    if os.fork() == 0:\n        break\nwhile True:\n    pass\n"


def wait(pred, limit=60.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.005)
    raise TimeoutError("condition not met")


class Agent:
    def __init__(self, binary, slots, user=None):
        self.dir = tempfile.mkdtemp(prefix="bench-sbx-", dir="/var/lib" if os.geteuid() == 0 else None)
        os.chmod(self.dir, 0o755)
        self.api = free_port()
        # Below the ephemeral range (32768+), where pings and clients get ports.
        self.base = 20000 + (self.api % 100) * 120
        env = dict(os.environ, SLOT_AGENT_TOKEN="bench")
        cmd = [binary, "--listen", f"127.0.0.1:{self.api}", "--state-dir", self.dir,
               "--slots", str(slots), "--base-port", str(self.base),
               "--slot-uid-base", str(300000 + self.base)]
        kw = {}
        if user is not None:
            os.chown(self.dir, user, user)
            kw = {"user": user, "group": user}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, **kw)
        wait(lambda: self.get("/v1/health") is not None)

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.api}{path}", data=data, method=method,
                                     headers={"Authorization": "Bearer bench",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.loads(r.read() or b"null")
        except OSError:
            return None

    def get(self, path):
        return self.call("GET", path)

    def running(self, n):
        ps = self.get("/v1/programs") or []
        return sum(1 for p in ps if p["state"] == "running") >= n

    def cpu_ticks(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)


def tenant(tt, slot, extra=None):
    spec = {"command": tt, "slot": slot, "restart": {"startSecs": 0},
            "ping": {"kind": "http", "path": "/api/v1/ping", "intervalMs": 1000},
            "maxMemoryMb": 64, "cpuMillis": 500}
    spec.update(extra or {})
    return spec


def start100(agent_bin, tt):
    a = Agent(agent_bin, 100)
    try:
        t = time.monotonic()
        for i in range(100):
            a.call("PUT", f"/v1/programs/p{i}", tenant(tt, i))
        wait(lambda: a.running(100))
        start = time.monotonic() - t
        time.sleep(3)
        hz = os.sysconf("SC_CLK_TCK")

        def cpu(seconds):
            c0, t0 = a.cpu_ticks(), time.monotonic()
            time.sleep(seconds)
            return (a.cpu_ticks() - c0) / hz / (time.monotonic() - t0) * 100

        quiet = cpu(20)
        # 14,000 more sockets on the host (7,000 connected pairs).
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(8192)
        socks = []
        for _ in range(7000):
            c = socket.create_connection(lst.getsockname())
            s, _ = lst.accept()
            socks += [c, s]
        busy = cpu(20)
        for s in socks:
            s.close()
        lst.close()
        return {"start100_ms": start * 1000, "cpu100_pct": quiet, "cpu100_14k_sockets_pct": busy,
                "rss100_kib": a.rss_kib()}
    finally:
        a.stop()


def p99(port, n=2000):
    lat = []
    for _ in range(n):
        t = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET /api/v1/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while s.recv(4096):
                pass
        lat.append(time.monotonic() - t)
    lat.sort()
    return lat[int(len(lat) * 0.99)] * 1000


def neighbour(agent_bin, tt, user=None):
    a = Agent(agent_bin, 2, user=user)
    try:
        a.call("PUT", "/v1/programs/n", tenant(tt, 0, {"ping": None}))
        wait(lambda: a.running(1))
        port = a.base
        def answers():
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                return True
            except OSError:
                return False
        wait(answers)
        idle = p99(port)
        a.call("PUT", "/v1/programs/spin", tenant("/usr/bin/python3", 1,
                                                  {"args": ["-c", SPIN], "ping": None}))
        wait(lambda: a.running(2))
        time.sleep(2)
        busy = p99(port)
        return {"idle_p99_ms": idle, "spinning_p99_ms": busy, "ratio": busy / idle}
    finally:
        a.stop()


def main():
    agent_bin, tt, out = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), sys.argv[3]
    res = {"cpus": os.cpu_count()}
    res.update(start100(agent_bin, tt))
    print(f"100 sandboxed starts {res['start100_ms']:.1f} ms, agent CPU {res['cpu100_pct']:.2f} % "
          f"({res['cpu100_14k_sockets_pct']:.2f} % with 14,000 more sockets), RSS {res['rss100_kib']/1024:.1f} MiB",
          flush=True)
    res["sandbox"] = neighbour(agent_bin, tt)
    print("neighbour p99, sandbox: idle {idle_p99_ms:.2f} ms, beside a spinner {spinning_p99_ms:.2f} ms "
          "({ratio:.1f}x)".format(**res["sandbox"]), flush=True)
    if os.geteuid() == 0:
        # The peer: the same agent as an unprivileged user (no cgroups).
        res["no_sandbox"] = neighbour(agent_bin, tt, user=65534)
        print("neighbour p99, no sandbox: idle {idle_p99_ms:.2f} ms, beside a spinner "
              "{spinning_p99_ms:.2f} ms ({ratio:.1f}x)".format(**res["no_sandbox"]), flush=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
