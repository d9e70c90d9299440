"""The heap cost of live updates (GET /api/live, smartbms.live) on the 32-bit frozen host build
with the board's heap (make bench).

Three windows on one simulated device, each BENCH_LIVE_S device seconds (default 900):
idle; two dashboards polling /api/status every 2 s (what the UI did before); two live
streams (the most the device serves; a third is refused). For each it prints the peak live
heap and the smallest largest-free-block (sampled after collections), and the stream window
also how many status pushes arrived and that the third stream got 503.
"""
import os
import socket
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "host"))
sys.path.insert(0, HERE)
from heap_workload import heap_lines  # noqa: E402
from simfixture import start_sim  # noqa: E402

SPEED = 60
WINDOW_S = int(os.environ.get("BENCH_LIVE_S", "900"))
REPORT_S = 30


def open_stream(sim, stop, counts, i):
    import base64

    s = socket.create_connection(("127.0.0.1", sim.port), 10)
    auth = base64.b64encode(("admin:%s" % sim.password).encode()).decode()
    s.sendall(("GET /api/live HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic %s\r\n\r\n" % auth).encode())
    s.settimeout(1)
    buf = b""
    while not stop.is_set():
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            continue
        if not chunk:
            break
        buf += chunk
        counts[i] += buf.count(b"event: status")
        buf = buf[-32:]
    s.close()


def poller(sim, stop, counts, i):
    while not stop.is_set():
        try:
            if sim.get("/api/status")[0] == 200:
                counts[i] += 1
        except OSError:
            pass
        time.sleep(2)


def window(sim, label, worker=None, n=2):
    t0 = max([x[0] for x in heap_lines(sim.output())] or [0])
    stop, counts, threads = threading.Event(), [0] * n, []
    if worker:
        for i in range(n):
            threads.append(threading.Thread(target=worker, args=(sim, stop, counts, i), daemon=True))
            threads[-1].start()
    extra = ""
    if worker is open_stream:
        time.sleep(2)
        code, _, body = sim.get("/api/live")
        extra = ", a third stream: %s %s" % (code, body.get("error") if isinstance(body, dict) else "")
    deadline = time.monotonic() + WINDOW_S / SPEED + 2 * REPORT_S / SPEED
    while time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(5)
    lines = [x for x in heap_lines(sim.output()) if x[0] > t0]
    print("%-32s live %6d..%6d B, peak %6d B, smallest largest free block %6d B (%d samples%s%s)" % (
        label, lines[0][1], lines[-1][1], max(x[4] for x in lines), min(x[5] for x in lines), len(lines),
        ", %s per client" % counts if worker else "", extra))
    return lines


def main():
    with tempfile.TemporaryDirectory() as d:
        sim = start_sim(d, speed=SPEED, timeout=60, extra_env={"SIM_HEAP_REPORT_S": str(REPORT_S)})
        try:
            time.sleep(600 / SPEED)  # settle: the link up, the first history minutes
            window(sim, "idle")
            window(sim, "2 dashboards polling every 2 s", poller)
            window(sim, "2 live streams (GET /api/live)", open_stream)
            window(sim, "idle again")
            bad = [tb for tb in sim.output().split("Traceback")[1:]]
            print("restarts: %d, tracebacks: %d" % (sim.output().count("restarting the device"), len(bad)))
        finally:
            sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
