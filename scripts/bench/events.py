"""The event stream under load (scripts/bench-events.sh): a generator of
1,000 events/s, 0 or 10 SSE clients, and a sampler of GET /api/tenants."""
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import sys
import threading
import time

SECS = float(sys.argv[1])
TENANT_BIN = sys.argv[2]
HOST, PORT = os.environ["SLOTPACK_LISTEN"].split(":")
PORT = int(PORT)
AUTH = {"Authorization": "Bearer " + os.environ["SLOTPACK_ADMIN_TOKEN"]}
RATE = 1000
ROUNDS = int(os.environ.get("ROUNDS", "3"))


def conn():
    return http.client.HTTPConnection(HOST, PORT, timeout=30)


def call(c, method, path, body=None):
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=AUTH)
    r = c.getresponse()
    data = r.read()
    return r.status, data


def generate(stop, made):
    """RATE token creates per second, paced, over three connections."""
    def worker(share):
        c = conn()
        start = time.monotonic()
        n = 0
        while not stop.is_set():
            due = start + n / share
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            st, _ = call(c, "POST", "/api/tokens", {"owner": "load"})
            assert st == 201, st
            n += 1
            made.append(time.time())
    ts = [threading.Thread(target=worker, args=(RATE / 3,)) for _ in range(3)]
    for t in ts:
        t.start()
    return ts


def sample(stop, out):
    c = conn()
    while not stop.is_set():
        t0 = time.perf_counter()
        st, _ = call(c, "GET", "/api/tenants")
        assert st == 200
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.005)


def client(stop, got, ready):
    """One SSE client, in a process of its own (the GIL stays with the
    load): counts the token.created events it receives."""
    s = socket.create_connection((HOST, PORT))
    s.sendall(("GET /api/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n"
               % AUTH["Authorization"]).encode())
    s.settimeout(0.5)
    ready.release()
    tail = b""
    needle = b'"kind":"token.created"'
    while not stop.is_set():
        try:
            chunk = s.recv(262144)
        except socket.timeout:
            continue
        if not chunk:
            break
        data = tail + chunk
        got.value += data.count(needle)
        tail = data[-(len(needle) - 1):]
    s.close()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def phase(clients):
    stop = threading.Event()
    made, lat = [], []
    cstop = multiprocessing.Event()
    counts = [multiprocessing.Value("l", 0) for _ in range(clients)]
    ready = multiprocessing.Semaphore(0)
    cs = [multiprocessing.Process(target=client, args=(cstop, counts[i], ready)) for i in range(clients)]
    for p in cs:
        p.start()
    for _ in cs:
        ready.acquire()
    time.sleep(0.5)
    gens = generate(stop, made)
    smp = threading.Thread(target=sample, args=(stop, lat))
    smp.start()
    time.sleep(SECS)
    stop.set()
    for t in gens + [smp]:
        t.join()
    time.sleep(1.5)  # the clients drain what is on its way
    cstop.set()
    for p in cs:
        p.join()
    rate = len(made) / SECS
    return rate, lat, [c.value for c in counts], len(made)


def main():
    c = conn()
    for i in range(20):
        st, body = call(c, "POST", "/api/tenants", {
            "id": "ev-%d" % i, "command": TENANT_BIN,
            "resources": {"memoryMb": 32, "cpuMillis": 10}})
        assert st in (200, 201), body
    time.sleep(1)
    print("event stream under %d events/s, %gs per phase, GET /api/tenants with 20 tenants" % (RATE, SECS))
    phase(0)  # warm-up, not counted
    p99 = {0: [], 10: []}
    # Interleaved rounds, so that a busy moment of the machine hits both.
    for _ in range(ROUNDS):
        for clients in (0, 10):
            rate, lat, counts, made = phase(clients)
            line = ("clients %2d: %6.0f events/s made; GET /api/tenants p50 %.2f ms p99 %.2f ms (%d samples)"
                    % (clients, rate, statistics.median(lat), pct(lat, 0.99), len(lat)))
            if counts:
                line += "; events received per client min %d max %d of %d" % (min(counts), max(counts), made)
            print(line, flush=True)
            p99[clients].append(pct(lat, 0.99))
    a, b = statistics.median(p99[0]), statistics.median(p99[10])
    print("median p99 of GET /api/tenants: %.2f ms without clients, %.2f ms with 10 (ratio %.2f)" % (a, b, b / a))


main()
