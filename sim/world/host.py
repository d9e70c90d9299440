"""Run a World and its link server on an asyncio loop in a background thread, and talk to
it from anywhere: the sim's supervisor (scripts/run_sim.py), the unix-port test runner
(tests/run_unix_tests.py) and the host tests.

    host = WorldHost(speed=60, battery=Battery(...), bms="jbd").start()
    host.port                      # give it to the device as SIM_WORLD=127.0.0.1:PORT
    host.control({"op": "status"}) # thread-safe
    WorldClient(port).call("button", level=0)   # from another process
"""
import asyncio
import json
import socket
import threading

from world.server import WorldServer
from world.world import World


class WorldHost:
    def __init__(self, port=0, **world_kw):
        self.world = World(**world_kw)
        self.server = WorldServer(self.world, port=port)
        self.loop = asyncio.new_event_loop()
        self.port = None
        self._thread = None

    def start(self):
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.port = self.loop.run_until_complete(self.server.start())
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="world", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the world did not start")
        return self

    def run(self, fn, *args):
        """Call fn(*args) on the world's loop and return its result."""
        fut = asyncio.run_coroutine_threadsafe(self._call(fn, args), self.loop)
        return fut.result(10)

    async def _call(self, fn, args):
        return fn(*args)

    def control(self, cmd):
        return self.run(self.world.control, dict(cmd))

    def address(self):
        return "127.0.0.1:%d" % self.port


class WorldClient:
    """A control session to a world in another process (JSON lines)."""

    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout)
        self.file = self.sock.makefile("rwb")

    def call(self, op, **kw):
        kw["op"] = op
        self.file.write(json.dumps(kw).encode() + b"\n")
        self.file.flush()
        answer = json.loads(self.file.readline() or b"null")
        if not answer or not answer.get("ok"):
            raise RuntimeError("world: %s" % (answer or {}).get("error", "no answer"))
        return answer["result"]

    def close(self):
        self.file.close()
        self.sock.close()
