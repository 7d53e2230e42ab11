#!/usr/bin/env python3
"""slot-agent against supervisord, side by side on the same sleep programs.

For N programs (`sleep 100000`) each supervisor is started, and measured:
  start   launch of the supervisor -> every program in its running state
  rss     the supervisor's own resident memory with N programs running
  restart `kill -9` of a program -> its new process reported running (median)
  sigterm SIGTERM to the supervisor -> the supervisor has exited
Each cycle starts the supervisor afresh; medians over the cycles are reported.
Usage: agent_vs_supervisord.py AGENT_BIN SUPERVISORD_BIN OUT_JSON [N ...]
"""
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import xmlrpc.client

CYCLES = int(os.environ.get("BENCH_CYCLES", "3"))
KILLS = int(os.environ.get("BENCH_KILLS", "5"))
SLEEP = shutil.which("sleep")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait(pred, limit=120.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.001)
    raise TimeoutError("benchmark condition not reached")


class Agent:
    name = "slot-agent"

    def __init__(self, binary, n):
        self.binary, self.n = binary, n
        self.dir = tempfile.mkdtemp(prefix="bench-agent-")
        os.makedirs(f"{self.dir}/programs")
        for i in range(n):
            spec = {"command": SLEEP, "args": ["100000"], "slot": i,
                    "restart": {"startSecs": 0}, "stop": {"timeoutMs": 10000}}
            with open(f"{self.dir}/programs/p{i}.json", "w") as f:
                json.dump({"spec": spec, "desired": "running"}, f)
        self.api = free_port()

    def launch(self):
        env = dict(os.environ, SLOT_AGENT_TOKEN="bench")
        base = 30000 + (self.api % 1000) * 20
        self.proc = subprocess.Popen(
            [self.binary, "--listen", f"127.0.0.1:{self.api}", "--state-dir", self.dir,
             "--slots", str(self.n), "--base-port", str(base)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _get(self, path):
        req = urllib.request.Request(f"http://127.0.0.1:{self.api}{path}",
                                     headers={"Authorization": "Bearer bench"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def states(self):
        try:
            return {p["id"]: (p["state"], p["pid"]) for p in self._get("/v1/programs")}
        except OSError:
            return {}

    def one(self, name):
        p = self._get(f"/v1/programs/{name}")
        return p["state"], p["pid"]

    def running(self):
        return "running"

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Supervisord:
    name = "supervisord"

    def __init__(self, binary, n):
        self.binary, self.n = binary, n
        self.dir = tempfile.mkdtemp(prefix="bench-supervisord-")
        self.port = free_port()
        progs = "".join(
            f"[program:p{i}]\ncommand={SLEEP} 100000\nstartsecs=0\nautorestart=true\n"
            f"stdout_logfile={self.dir}/p{i}.log\nredirect_stderr=true\n\n" for i in range(n))
        with open(f"{self.dir}/supervisord.conf", "w") as f:
            f.write(f"""[supervisord]
nodaemon=true
logfile={self.dir}/supervisord.log
pidfile={self.dir}/supervisord.pid

[inet_http_server]
port=127.0.0.1:{self.port}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

{progs}""")

    def launch(self):
        self.proc = subprocess.Popen([self.binary, "-c", f"{self.dir}/supervisord.conf"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.port}/RPC2")

    def states(self):
        try:
            return {p["name"]: (p["statename"], p["pid"]) for p in self.rpc.supervisor.getAllProcessInfo()}
        except (OSError, xmlrpc.client.Fault):
            return {}

    def one(self, name):
        p = self.rpc.supervisor.getProcessInfo(name)
        return p["statename"], p["pid"]

    def running(self):
        return "RUNNING"

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def cycle(sup):
    t0 = time.monotonic()
    sup.launch()
    run = sup.running()
    wait(lambda: (lambda s: len(s) == sup.n and all(st == run for st, _ in s.values()))(sup.states()))
    start = time.monotonic() - t0
    # Settle before sampling memory, and let every program run past 1 s: a
    # kill -9 is then of a program that was running, not of a failed start
    # (slot-agent backs off after runs under 1 s, as supervisord's default
    # startsecs=1 would).
    time.sleep(1.2)
    rss = rss_kib(sup.proc.pid)
    restarts = []
    for k in range(KILLS):
        name = f"p{k % sup.n}"
        _, pid = sup.one(name)
        t = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait(lambda: (lambda st: st[0] == run and st[1] not in (0, None, pid))(sup.one(name)))
        restarts.append(time.monotonic() - t)
        time.sleep(0.05)
    t = time.monotonic()
    sup.proc.send_signal(signal.SIGTERM)
    sup.proc.wait(timeout=600)
    sigterm = time.monotonic() - t
    return {"start_s": start, "rss_kib": rss, "restart_s": statistics.median(restarts), "sigterm_s": sigterm}


def main():
    agent_bin, sup_bin, out = sys.argv[1], sys.argv[2], sys.argv[3]
    sizes = [int(x) for x in sys.argv[4:]] or [10, 100]
    results = []
    for n in sizes:
        for kind in (Agent, Supervisord):
            sup = kind(agent_bin if kind is Agent else sup_bin, n)
            runs = []
            try:
                for _ in range(CYCLES):
                    runs.append(cycle(sup))
            finally:
                if getattr(sup, "proc", None) and sup.proc.poll() is None:
                    sup.proc.kill()
                    sup.proc.wait()
                sup.cleanup()
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            med.update(name=sup.name, n=n, cycles=CYCLES)
            results.append(med)
            print(f"{sup.name:12} n={n:3}  start {med['start_s']*1000:8.1f} ms  rss {med['rss_kib']/1024:6.1f} MiB  "
                  f"restart {med['restart_s']*1000:8.1f} ms  sigterm {med['sigterm_s']*1000:9.1f} ms", flush=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
