"""A module placed in the sim's filesystem runs instead of the frozen one and the device says
so, as `make deploy` leaves it on the chip: the file is written into the littlefs of the sim's
flash (SIM_DIR/flash.bin) with the host interpreter itself, as mpremote would write it."""
import os
import subprocess

import pytest
from simfixture import ROOT, start_sim

pytestmark = pytest.mark.sim

MICROPYTHON = os.environ.get("MICROPYTHON") or os.path.join(ROOT, "build", "host", "micropython")

# runs on the host interpreter: mount the vfs partition of flash.bin as sim_main does, write
# the override (source compiled by mpy-cross on the device's side is not needed: a .py loads)
WRITE = r"""
import sys, os, vfs, esp32
esp32.configure(sys.argv[-1])
part = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")[0]
vfs.mount(vfs.VfsLfs2(part), "/fs")
try:
    os.mkdir("/fs/override")
except OSError:
    pass
with open("/fs/override/smartbms__charge__relay.py", "w") as f:
    f.write(open("modules/smartbms/charge/relay.py").read() + "\nOVERRIDDEN = True\n")
with open("/fs/override/modules.txt", "w") as f:
    f.write("smartbms.charge.relay\n")
vfs.umount("/fs")
print("written")
"""


def test_a_module_in_the_filesystem_runs_and_is_reported(tmp_path):
    sim = start_sim(tmp_path, speed=60)
    sim.stop()
    script = tmp_path / "write.py"
    script.write_text(WRITE)
    flash = os.path.join(sim.dir, "flash.bin")
    r = subprocess.run([MICROPYTHON, str(script), flash], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, MICROPYPATH=".frozen", SIM_DIR=sim.dir))
    assert r.returncode == 0 and "written" in r.stdout, r.stdout + r.stderr
    sim.start()
    try:
        sim.wait_ready(40)
        code, _, st = sim.get("/api/status")
        assert code == 200
        assert st["device"]["overrides"]["modules"] == ["smartbms.charge.relay"], st["device"]["overrides"]
        code, _, ev = sim.get("/api/events?limit=50")
        text = str(ev)
        assert "from the filesystem" in text and "charge.relay" in text, text[:2000]
        # the relay still drives the charger: the override is the same code
        code, _, body = sim.request("POST", "/api/relay", json={"mode": "off", "minutes": 5})
        assert code == 200 and sim.world("status")["charger_on"] is False, body
    finally:
        sim.stop()
