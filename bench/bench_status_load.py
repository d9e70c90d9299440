#!/usr/bin/env python3
"""GET /api/status under 20 concurrent clients against the running simulator.

Prints latency p50/p95/max, requests/s and the non-200 answers, once with the session
cookie (what the UI sends every 2 s) and once with HTTP Basic (scripts; after the first
check the password is recognised without redoing PBKDF2). Also prints the PBKDF2 cost on
the unix port, the figure behind auth.ITERATIONS.

    python bench/bench_status_load.py [--clients 20] [--requests 25]
(`make bench` runs it with MICROPYTHON/MICROPYPATH set.)
"""
import argparse
import base64
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "host"))

from simfixture import start_sim  # noqa: E402

PASSWORD = "bench-password"


def one(port, headers):
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/api/status", headers=headers)
        r = conn.getresponse()
        body = r.read()
        status = r.status
        if status == 200:
            json.loads(body)
    except (OSError, ValueError, http.client.HTTPException) as e:
        status = type(e).__name__
    finally:
        conn.close()
    return status, time.perf_counter() - t0


def load(port, headers, clients, per_client):
    lat, codes = [], {}
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def worker():
        start.wait()
        for _ in range(per_client):
            st, dt = one(port, headers)
            with lock:
                codes[st] = codes.get(st, 0) + 1
                if st == 200:
                    lat.append(dt)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return lat, codes, wall


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def report(label, lat, codes, wall, clients):
    n = sum(codes.values())
    print("%-8s %d clients, %d requests in %.2f s: %.0f req/s (%.0f ok/s); latency ms p50 %.1f  p95 %.1f  max %.1f;"
          " answers %s" % (label, clients, n, wall, n / wall, len(lat) / wall, pct(lat, 50) * 1000,
                           pct(lat, 95) * 1000, (max(lat) if lat else float("nan")) * 1000,
                           ", ".join("%s: %d" % kv for kv in sorted(codes.items(), key=lambda kv: str(kv[0])))))


def pbkdf2_cost():
    mp = os.environ.get("MICROPYTHON") or os.path.join(ROOT, "build", "host", "micropython")
    code = ("import time\nfrom smartbms import auth\nbest=None\nfor i in range(7):\n"
            " t=time.ticks_us()\n"
            " auth.pbkdf2_sha256(b'password', b'0123456789abcdef', auth.ITERATIONS)\n"
            " d=time.ticks_diff(time.ticks_us(), t)\n"
            " best=d if best is None or d<best else best\n"
            "print('%d %d' % (auth.ITERATIONS, best))\n")
    env = dict(os.environ)
    env.setdefault("MICROPYPATH", ".frozen:" + os.path.join(ROOT, "modules"))
    try:
        out = subprocess.run([mp, "-c", code], env=env, capture_output=True, text=True, timeout=60).stdout.split()
        it, us = int(out[0]), int(out[1])
        print("pbkdf2   %d rounds on the unix port (best of 7): %.1f ms (%.2f us/round); at the estimated 40-75x the ESP32"
              " needs %.0f-%.0f ms" % (it, us / 1000, us / it, us * 40 / 1000, us * 75 / 1000))
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as e:
        print("pbkdf2   could not run the unix port: %s" % e)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=25, help="per client")
    ap.add_argument("--port", type=int, help="use a server already running on 127.0.0.1:PORT (e.g. make sim)")
    ap.add_argument("--password", default=PASSWORD, help="its admin password (with --port)")
    args = ap.parse_args()
    pbkdf2_cost()
    if args.port:
        run(args, args.port, args.password)
        return
    crashed = None
    with tempfile.TemporaryDirectory() as d:
        sim = start_sim(d, speed=60, password=PASSWORD)
        try:
            print("target   the simulator (full firmware, BLE shim, speed x60)")
            run(args, sim.port, PASSWORD)
            crashed = sim.proc.poll()
        finally:
            try:
                sim.stop(timeout=5)
            except Exception:  # noqa: BLE001
                pass
            sim.kill()
    if crashed is not None:
        # the unix port's POSIX select.poll shortcut crashed with ThreadSafeFlag waiters plus
        # many connections; the host build now uses the ESP32's poll path (sim/unix_variant)
        print("target   the simulator DIED under the load (exit %s): the figures above are void" % crashed)
    # the same web layer without the BLE shim: what the web code itself costs
    print("target   tests/host/webstack_main.py (real web layer and assets, synthetic battery, no BLE shim)")
    run_webstack(args)


def run_webstack(args):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    mp = os.environ.get("MICROPYTHON") or os.path.join(ROOT, "build", "host", "micropython")
    env = dict(os.environ)
    env["MICROPYPATH"] = os.environ.get("MICROPYPATH") or ":".join(
        [".frozen"] + [os.path.join(ROOT, p) for p in ("modules", "build/gen", "sim/shims", "sim", "build/vendor")])
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen([mp, "-X", "heapsize=512k", os.path.join(ROOT, "tests", "host", "webstack_main.py"),
                                 str(port), d + "/", PASSWORD], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        sys.exit("bench_status_load: webstack did not start")
                    time.sleep(0.2)
            run(args, port, PASSWORD)
        finally:
            proc.kill()
            proc.wait(10)


def run(args, port, password):
    cred = base64.b64encode(("admin:" + password).encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/api/login", body=json.dumps({"password": password}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    cookie = (r.getheader("Set-Cookie") or "").split(";")[0]
    conn.close()
    if not cookie:
        sys.exit("bench_status_load: login failed (HTTP %d)" % r.status)
    one(port, {"Cookie": cookie})  # warm up
    for label, headers in (("session", {"Cookie": cookie}), ("basic", {"Authorization": "Basic " + cred})):
        lat, codes, wall = load(port, headers, args.clients, args.requests)
        report(label, lat, codes, wall, args.clients)
    lat, codes, wall = load(port, {"Cookie": cookie}, 1, args.requests * 2)
    report("serial", lat, codes, wall, 1)


if __name__ == "__main__":
    main()
