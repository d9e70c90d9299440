"""Every socket the firmware opens is closed again, on every path: the simulated device's
open sockets are counted (/proc/PID/fd of the firmware process under the run_sim supervisor)
before and after failed pulls, refused uploads and dropped clients. The ESP32 build has 16
lwIP sockets in all, and MicroPython's Stream.close() does nothing (wait_closed() closes),
so one forgotten await per failed pull used to take a socket for good."""
import base64
import os
import socket
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "sim"))
import esp_image  # noqa: E402
from simfixture import start_sim  # noqa: E402

PASSWORD = "socket-test-pass"
SHA = "00" * 32

if not os.path.isdir("/proc/self/fd"):
    pytest.skip("counting a process's sockets needs /proc (Linux)", allow_module_level=True)


def device_pid(sim):
    """The firmware: the `micropython` child of the run_sim supervisor."""
    with open("/proc/%d/task/%d/children" % (sim.proc.pid, sim.proc.pid)) as f:
        kids = [int(x) for x in f.read().split()]
    for pid in kids:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"micropython" in f.read().split(b"\0")[0]:
                    return pid
        except OSError:
            continue
    raise AssertionError("no micropython process under the supervisor (children %r)" % kids)


def open_sockets(pid):
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"):
                n += 1
        except OSError:
            pass  # closed while we looked
    return n


def settle(pid, want, timeout=20):
    """The socket count once it stops falling (or reaches `want`)."""
    deadline = time.monotonic() + timeout
    n = open_sockets(pid)
    while n > want and time.monotonic() < deadline:
        time.sleep(0.25)
        n = open_sockets(pid)
    return n


class ImageServer:
    """A tiny HTTP server for the device to pull from: each connection gets `answer`."""

    def __init__(self, answer):
        self.answer = answer
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        try:
            c.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = c.recv(1024)
                if not chunk:
                    break
                head += chunk
            c.sendall(self.answer)
            c.shutdown(socket.SHUT_WR)
            while c.recv(1024):  # until the device hangs up
                pass
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()


def free_closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def raw(sim, data, read=True, timeout=15):
    s = socket.create_connection(("127.0.0.1", sim.port), timeout=timeout)
    try:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        while True:
            try:
                chunk = s.recv(4096)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def test_failed_pulls_refused_uploads_and_dropped_clients_leave_no_socket_open(tmp_path):
    sim = start_sim(tmp_path, speed=60, password=PASSWORD)
    servers = []
    try:
        pid = device_pid(sim)
        assert sim.get("/api/status")[0] == 200
        time.sleep(1.0)
        baseline = settle(pid, 0, timeout=3)
        assert baseline > 0  # the listening socket at least

        # failed pulls: nothing listening, a 404, a non-HTTP answer, no Content-Length
        closed = free_closed_port()
        answers = (b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n", b"SSH-2.0-nope\r\n\r\n",
                   b"HTTP/1.0 200 OK\r\nX-A: b\r\n\r\nbody")
        servers = [ImageServer(a) for a in answers]
        urls = ["http://127.0.0.1:%d/fw.bin" % closed] * 4 + \
               ["http://127.0.0.1:%d/fw.bin" % s.port for s in servers] * 2
        for url in urls:
            st, _, body = sim.request("POST", "/api/ota/url", json={"url": url, "sha256": SHA}, timeout=30)
            assert st in (502, 422), (url, st, body)
        assert pid == device_pid(sim)

        # refused uploads: a form type, a foreign image, too large, an empty body
        for _ in range(3):
            st, _, _ = sim.request("POST", "/api/ota", body=b"\xe9" * 1000,
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert st == 415
            st, _, _ = sim.request("POST", "/api/ota", body=esp_image.variant("foreign", size=64 * 1024),
                                   headers={"Content-Type": "application/octet-stream"}, timeout=30)
            assert st == 400
        auth = "Basic " + base64.b64encode(("admin:" + PASSWORD).encode()).decode()
        big = ("POST /api/ota HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Type: application/octet-stream\r\n"
               "Content-Length: %d\r\n\r\n" % (auth, 0x1D0000 + 1)).encode()
        for _ in range(3):
            assert raw(sim, big + b"\xe9" * 512).startswith(b"HTTP/1.0 413")

        # dropped clients: connect and go, half a head, half an upload, a reset mid-request
        for _ in range(3):
            raw(sim, b"", read=False)
            raw(sim, b"GET /api/status HTTP/1.1\r\nHost: x\r\n", read=False)
            s = socket.create_connection(("127.0.0.1", sim.port), timeout=10)
            s.sendall(big.replace(b"%d" % (0x1D0000 + 1), b"200000") + b"\xe9" * 4096)
            s.close()
            s = socket.create_connection(("127.0.0.1", sim.port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.sendall(b"GET /api/status HTTP/1.1\r\n")
            s.close()  # RST
        # the half-open ones hold their slots until the head timeout: busy (503) until then,
        # then answering again
        deadline = time.monotonic() + 15
        st = sim.get("/api/status")[0]
        while st == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
            st = sim.get("/api/status")[0]
        assert st == 200
        assert pid == device_pid(sim), "the firmware restarted: its sockets were not counted through"

        # every one of them is closed once the head/idle timeouts (5 s / 10 s) have passed
        after = settle(pid, baseline, timeout=25)
        assert after <= baseline, "%d sockets left open (baseline %d)\n%s" % (after, baseline, sim.output()[-2000:])
    finally:
        for s in servers:
            s.close()
        try:
            sim.stop(timeout=5)
        except Exception:
            pass
        sim.kill()
