# Capture mode end to end on the simulator: the sim's unknown peer (sim/world/unknown_peer.py)
# on the air, the capture refused while the relay charges, run through the API once the relay
# is overridden off, the file downloaded and read back, and the BMS link reading again after.
import time

from simfixture import start_sim

UNKNOWN = "11:22:33:44:55:66"


def _wait(fn, timeout, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(step)
    return fn()


def test_capture_from_the_unknown_peer_downloads_as_a_readable_file(tmp_path):
    sim = start_sim(tmp_path, speed=60, bms="jbd")
    try:
        sim.world("add_unknown_peer", mac=UNKNOWN, name="Mystery BMS")
        # SOC 55 %: the relay charges, and charging depends on the BMS link
        assert _wait(lambda: sim.get("/api/status")[2]["charger"]["relay"], 30), sim.output()[-2000:]
        st, _, body = sim.request("POST", "/api/bms/capture", json={"mac": UNKNOWN})
        assert st == 409 and "relay is on" in body["error"], body
        st, _, body = sim.request("POST", "/api/bms/capture", json={"mac": UNKNOWN, "seconds": 1})
        assert st == 422 and body["field"] == "seconds"
        st, _, body = sim.get("/api/bms/capture/file")
        assert st == 404
        st, _, body = sim.request("POST", "/api/relay", json={"mode": "off", "minutes": 60})
        assert st == 200 and body["charger"]["relay"] is False
        st, _, body = sim.request("POST", "/api/bms/capture", json={
            "mac": UNKNOWN.lower(), "request_hex": "a5 01 02", "every_s": 1, "seconds": 6})
        assert st == 200 and body["state"] == "starting", body
        st, _, body = sim.request("POST", "/api/bms/capture", json={"mac": UNKNOWN})
        assert st == 409 and "already running" in body["error"]

        def running():
            doc = sim.get("/api/bms/capture")[2]
            return doc if doc["state"] == "running" else None

        doc = _wait(running, 20)
        assert doc, sim.get("/api/bms/capture")[2]
        status = sim.get("/api/status")[2]
        assert status["charger"]["relay"] is False and status["bms"]["connected"] is False
        assert _wait(lambda: sim.world("peer_info", mac=UNKNOWN)["connected"], 5)

        def done():
            doc = sim.get("/api/bms/capture")[2]
            return doc if doc["state"] not in ("starting", "running") else None

        doc = _wait(done, 30)
        assert doc and doc["state"] == "done" and doc["end"] == "6 s passed", doc
        assert doc["notifications"] >= 8 and doc["requests"] >= 5 and doc["lost"] == 0
        assert doc["file_bytes"] == doc["bytes"] <= doc["cap_bytes"] == 32768

        st, headers, data = sim.get("/api/bms/capture/file")
        assert st == 200 and headers["content-type"].startswith("text/plain")
        assert "attachment" in headers["content-disposition"]
        assert int(headers["content-length"]) == len(data) == doc["bytes"]
        text = data.decode("utf-8")
        lines = text.splitlines()
        assert lines[0] == "# smartbms BLE capture"
        assert "# mac: 11:22:33:44:55:66  name: Mystery BMS  rssi: -58" in lines
        assert "#   char ffb2 handle 0x0006 props write-no-response,write request-target" in lines
        assert "# request: a50102 every 1 s to ffb2 (handle 0x0006)" in lines
        records = [line.split(" ") for line in lines if not line.startswith("#")]
        assert sum(1 for r in records if r[3] == "write") == doc["requests"]
        assert sum(1 for r in records if r[3] == "notify") == doc["notifications"]
        assert all(r[3] != "notify" or r[2] in ("ffb1", "ffb3") for r in records)
        assert lines[-1].startswith("# end: 6 s passed; ")
        peer = sim.world("peer_info", mac=UNKNOWN)
        assert not peer["connected"] and [w[1] for w in peer["writes"]].count("a50102") == doc["requests"]

        # the BMS link is back and reading
        def reading():
            b = sim.get("/api/status")[2]["bms"]
            return b["connected"] and b["age_s"] is not None and b["age_s"] <= 30

        assert _wait(reading, 30), sim.get("/api/status")[2]["bms"]
        events = sim.get("/api/events?limit=50")[2]["events"]
        assert any("capture of 11:22:33:44:55:66 ended: 6 s passed" in e["msg"] for e in events)

        # DELETE erases the file once no capture runs
        st, _, body = sim.request("DELETE", "/api/bms/capture")
        assert st == 200 and body == {"erased": True}
        assert sim.get("/api/bms/capture/file")[0] == 404
        assert sim.get("/api/bms/capture")[2] == {"state": "idle", "file_bytes": None}
    finally:
        sim.stop()
