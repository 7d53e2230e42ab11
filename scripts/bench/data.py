"""Driver of scripts/bench-data.sh: times moves against restarts of a
tenant with 100 MiB of data, and migrations with and without 100 MiB of
user_data, against a running `slotpack serve` (docker backend).
Usage: data.py ROUNDS WORKDIR SLOTPACK_BINARY"""

import json
import os
import statistics
import subprocess
import sys
import time

sys.stdout.reconfigure(line_buffering=True)
import urllib.request

ROUNDS, WORK, SLOTPACK = int(sys.argv[1]), sys.argv[2], sys.argv[3]
API = "http://" + os.environ["SLOTPACK_LISTEN"]
TOKEN = os.environ["SLOTPACK_ADMIN_TOKEN"]
IMAGE = "slotpack-test/python:bookworm"
MIB100 = 100 << 20

# Writes 100 MiB into its home once, counts its starts, serves the app.
APP = r"""
import os, runpy
home = os.environ["HOME"]
blob = os.path.join(home, "blob")
if not os.path.exists(blob):
    with open(blob + ".part", "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    os.rename(blob + ".part", blob)
n = int(open(home + "/starts").read()) + 1 if os.path.exists(home + "/starts") else 1
open(home + "/starts", "w").write(str(n))
print("start %d blob=%d" % (n, os.path.getsize(blob)), flush=True)
runpy.run_path("/app/server.py", run_name="__main__")
"""


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + TOKEN)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def spec(cls, env):
    return {"id": "big", "command": "python3", "args": ["-c", APP], "workingDir": "/app",
            "poolClass": cls, "env": env,
            "ping": {"kind": "http", "path": "/api/v1/ping", "intervalMs": 100,
                     "initialDelayMs": 30000},
            "restart": {"startSecs": 0}, "resources": {"memoryMb": 256, "cpuMillis": 10}}


def wait_start(n, limit=120):
    """Until the log shows start n with the whole blob and the port answers."""
    deadline = time.time() + limit
    while time.time() < deadline:
        _, log = call("GET", "/api/tenants/big/logs?tail=50")
        if ("start %d blob=%d" % (n, MIB100)).encode() in log:
            st, body = call("GET", "/api/tenants/big")
            port = json.loads(body)["tenant"]["placement"]["port"]
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/ping" % port, timeout=1):
                    return
            except OSError:
                pass
        time.sleep(0.01)
    raise SystemExit("start %d not seen" % n)


def moves_and_restarts():
    for cls in ("a", "b"):
        st, b = call("PUT", "/api/pool/classes/" + cls, {"image": IMAGE, "slots": 2, "memoryMb": 1024})
        assert st in (200, 201), b
    st, b = call("POST", "/api/tenants", spec("a", {"V": "0"}))
    assert st == 201, b
    wait_start(1, 300)
    # A pool of class b, waiting for the tenant (its filler keeps it).
    filler = dict(spec("b", {}), id="filler", args=["/app/server.py"])
    filler["resources"] = {"memoryMb": 64, "cpuMillis": 10}
    st, b = call("POST", "/api/tenants", filler)
    assert st == 201, b
    n, cls = 1, "a"
    restart, move = [], []
    for r in range(ROUNDS):
        n += 1
        t0 = time.time()
        st, b = call("PUT", "/api/tenants/big", spec(cls, {"V": str(r + 1)}))
        assert st == 200, b
        wait_start(n)
        restart.append(time.time() - t0)
        n += 1
        cls = "b" if cls == "a" else "a"
        t0 = time.time()
        st, b = call("PUT", "/api/tenants/big", spec(cls, {"V": str(r + 1)}))
        assert st == 200, b
        pool = json.loads(b)["tenant"]["placement"]["poolId"]
        wait_start(n)
        move.append(time.time() - t0)
        print("round %d: restart %.0f ms, move to %s %.0f ms" % (r + 1, restart[-1] * 1e3, pool, move[-1] * 1e3))
    call("DELETE", "/api/tenants/big")
    call("DELETE", "/api/tenants/filler")
    return statistics.median(restart), statistics.median(move)


def legacy(name, mib):
    d = os.path.join(WORK, name)
    os.makedirs(d)
    with open(os.path.join(d, "blob"), "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    subprocess.run(["docker", "run", "-d", "--name", name,
                    "--label", "managed-by=slotpack", "--label", "slotpack.bench-data=true",
                    "-e", "PORT=8080", "-w", "/app", "-v", d + ":/freqtrade/user_data",
                    IMAGE, "python3", "/app/server.py"], check=True, stdout=subprocess.DEVNULL)


def migrate_one(name):
    env = dict(os.environ)
    t0 = time.time()
    subprocess.run([SLOTPACK, "migrate", "--execute", "--legacy-pattern", name], env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - t0


def migrations():
    full, empty = [], []
    for r in range(ROUNDS):
        a, b = "bd-full-%d" % r, "bd-empty-%d" % r
        # Found by name only (--legacy-pattern): one at a time.
        legacy(a, 100)
        legacy(b, 0)
        time.sleep(1)
        full.append(migrate_one(a))
        empty.append(migrate_one(b))
        print("round %d: migrate with 100 MiB %.2f s, empty %.2f s" % (r + 1, full[-1], empty[-1]))
        for t in (a, b):
            call("DELETE", "/api/tenants/" + t)
    return statistics.median(full), statistics.median(empty)


restart, move = moves_and_restarts()
full, empty = migrations()
print("median of %d: restart in its slot %.0f ms, move to another pool %.0f ms (100 MiB home, no copy)"
      % (ROUNDS, restart * 1e3, move * 1e3))
print("median of %d: migrate a bot with 100 MiB of user_data %.2f s, with an empty one %.2f s"
      % (ROUNDS, full, empty))
