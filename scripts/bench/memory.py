#!/usr/bin/env python3
"""Memory of N tenants as N legacy containers versus pooled by slotpack.

Both run the same test tenant from the pool image. Counted per container:
its cgroup memory (memory.usage_in_bytes minus page cache, as docker stats
shows) plus the RSS of its containerd shim process; for pooled, the
orchestrator's own RSS is reported beside it.
Usage: memory.py SLOTPACK_BIN IMAGE OUT_JSON [N ...]
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

LABEL = "slotpack.bench-memory=true"


def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def cgroup_bytes(cid):
    base = f"/sys/fs/cgroup/memory/docker/{cid}"
    if os.path.isdir(base):
        usage = int(open(f"{base}/memory.usage_in_bytes").read())
        cache = 0
        for line in open(f"{base}/memory.stat"):
            k, v = line.split()
            if k == "total_inactive_file":
                cache = int(v)
        return usage - cache
    # cgroup v2
    for base in (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope", f"/sys/fs/cgroup/docker/{cid}"):
        if os.path.isdir(base):
            usage = int(open(f"{base}/memory.current").read())
            stat = dict(l.split() for l in open(f"{base}/memory.stat"))
            return usage - int(stat.get("inactive_file", 0))
    raise RuntimeError(f"no cgroup for {cid}")


def rss_bytes(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def shim_bytes(cid):
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "containerd-shim" in cmd and cid in cmd:
            total += rss_bytes(pid)
    return total


def measure(ids):
    time.sleep(3)  # settle
    mem = sum(cgroup_bytes(c) for c in ids)
    shims = sum(shim_bytes(c) for c in ids)
    return mem, shims


def wait_http(port, path="/api/v1/ping", limit=60):
    end = time.time() + limit
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port}")


def legacy(image, n):
    ids = []
    try:
        for i in range(n):
            ids.append(sh("docker", "run", "-d", "--label", "managed-by=slotpack", "--label", LABEL,
                          "-e", "PORT=8080", "-p", "127.0.0.1::8080", "--entrypoint", "/usr/local/bin/test-tenant",
                          image, "--host", "0.0.0.0"))
        for c in ids:
            wait_http(int(sh("docker", "port", c, "8080/tcp").splitlines()[0].rsplit(":", 1)[1]))
        full = [sh("docker", "inspect", "-f", "{{.Id}}", c) for c in ids]
        return measure(full)
    finally:
        for c in ids:
            sh("docker", "rm", "-f", "-v", c, check=False)


def pooled(slotpack, image, n):
    data = tempfile.mkdtemp(prefix="bench-mem-")
    os.chmod(data, 0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        api = s.getsockname()[1]
    env = dict(os.environ, SLOTPACK_ADMIN_TOKEN="bench", SLOTPACK_LISTEN=f"127.0.0.1:{api}", SLOTPACK_DATA_DIR=data,
               SLOTPACK_BACKEND="docker", SLOTPACK_POOL_IMAGE=image, POOL_BASE_PORT="21000",
               MAX_BOTS_PER_CONTAINER="10", HEALTH_CHECK_INTERVAL="600000")
    orch = subprocess.Popen([slotpack, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hdr = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
    try:
        wait_http(api, "/healthz")
        for i in range(n):
            body = json.dumps({"id": f"m{i}", "command": "/usr/local/bin/test-tenant", "args": ["--host", "0.0.0.0"],
                               "resources": {"memoryMb": 64, "cpuMillis": 10}}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{api}/api/tenants", data=body, headers=hdr, method="POST")
            with urllib.request.urlopen(req, timeout=60) as r:
                port = json.loads(r.read())["placement"]["port"]
            wait_http(port)
        ids = sh("docker", "ps", "-q", "--no-trunc", "--filter", "label=slotpack.pool").split()
        mem, shims = measure(ids)
        return mem, shims, len(ids), rss_bytes(orch.pid)
    finally:
        orch.terminate()
        orch.wait()
        for c in sh("docker", "ps", "-aq", "--filter", "label=slotpack.pool").split():
            sh("docker", "rm", "-f", "-v", c, check=False)
        for v in sh("docker", "volume", "ls", "-q", "--filter", "label=managed-by=slotpack").split():
            sh("docker", "volume", "rm", "-f", v, check=False)


def main():
    slotpack, image, out = sys.argv[1:4]
    sizes = [int(x) for x in sys.argv[4:]] or [10, 50]
    rows = []
    mib = 1 << 20
    for n in sizes:
        lmem, lshim = legacy(image, n)
        pmem, pshim, pools, orch = pooled(slotpack, image, n)
        row = {"n": n, "legacy_cgroup_mib": lmem / mib, "legacy_shims_mib": lshim / mib,
               "pooled_cgroup_mib": pmem / mib, "pooled_shims_mib": pshim / mib, "pools": pools,
               "orchestrator_rss_mib": orch / mib}
        rows.append(row)
        print(f"n={n:3}  legacy {n} containers: {(lmem + lshim) / mib:7.1f} MiB (cgroups {lmem / mib:.1f} + shims {lshim / mib:.1f})"
              f"   pooled {pools} containers: {(pmem + pshim) / mib:6.1f} MiB (cgroups {pmem / mib:.1f} + shims {pshim / mib:.1f})"
              f"   + orchestrator {orch / mib:.1f} MiB", flush=True)
    json.dump(rows, open(out, "w"), indent=2)


if __name__ == "__main__":
    main()
