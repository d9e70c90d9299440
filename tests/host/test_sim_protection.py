"""The simulated BMS reports the protection it is in through its family's own frames
(sim/bms_frames.py, bms_frames_more.py): the sim panel's "BMS protection" and a pack beyond
the BMS's temperature limits reach the device as they would from a real BMS, in the status's
bms.faults and in the charger's state and reason. SIM_BMS picks the family."""
import pytest

from browser_util import have_sim
from test_sim_panel import act, events, wait_status

pytestmark = pytest.mark.sim


def start(tmp_path, bms):
    if not have_sim():
        pytest.skip("the simulator is not available")
    from simfixture import start_sim

    return start_sim(tmp_path, speed=300, bms=bms)


# every family whose frames carry the protection (Redodo's carry none: below); ANT says it
# with its charge MOSFET status code, Renogy in status 1, the others with protection bits
@pytest.mark.parametrize("bms", ["jbd", "jk02_24s", "jk02_32s", "daly", "seplos", "ant", "renogy"])
def test_the_panels_bms_protection_is_a_fault_the_device_names(tmp_path, bms):
    sim = start(tmp_path, bms)
    try:
        wait_status(sim, lambda s: s["charger"]["relay"] and s["bms"]["faults"] == [])
        assert act(sim, "protect") == "BMS protection: cell over-voltage"
        st = wait_status(sim, lambda s: s["charger"]["state"] == "fault")
        assert st["bms"]["faults"] == ["cell_overvoltage"] and st["bms"]["charge_fet"] is False
        assert st["charger"]["reason"] == "BMS protection: cell_overvoltage"
        assert st["charger"]["summary"] == "Stopped for safety: BMS protection: cell_overvoltage"
        assert st["charger"]["next"] == "resumes when the BMS clears it"
        assert st["charger"]["relay"] is False
        assert "fault: BMS protection: cell_overvoltage" in events(sim)
        act(sim, "protect_off")
        st = wait_status(sim, lambda s: s["charger"]["state"] == "charging" and s["charger"]["relay"])
        assert st["bms"]["faults"] == [] and st["bms"]["charge_fet"] is not False
    finally:
        sim.stop()


def test_redodo_frames_carry_no_protection(tmp_path):
    """No source names the bits of a Redodo/LiTime pack's protection word, and it sends no
    MOSFET state: the device sees only that the charge current stops."""
    sim = start(tmp_path, "redodo")
    try:
        wait_status(sim, lambda s: s["charger"]["relay"] and s["bms"]["current"] > 0)
        act(sim, "protect")
        st = wait_status(sim, lambda s: s["bms"]["current"] < 0)
        assert st["bms"]["faults"] == [] and st["bms"]["charge_fet"] is None
    finally:
        sim.stop()


@pytest.mark.parametrize("bms", ["jbd", "jk02_32s", "seplos"])
def test_a_pack_beyond_the_bms_temperature_limits_shows_its_protection(tmp_path, bms):
    """-5 and 60 °C are outside the simulated BMS's charge range (0..55 °C): it reports its
    temperature protection, and the device's own temperature rule (never wider than the
    BMS's) names the temperature."""
    sim = start(tmp_path, bms)
    try:
        wait_status(sim, lambda s: s["charger"]["relay"])
        for name, fault, reason in (("cold", "charge_undertemp", "temperature -5.0 °C < 2 °C"),
                                    ("hot", "charge_overtemp", "temperature 60.0 °C > 45 °C")):
            act(sim, name)
            st = wait_status(sim, lambda s: s["bms"]["faults"] == [fault] and s["charger"]["state"] == "fault")
            assert st["charger"]["reason"] == reason and st["charger"]["relay"] is False
            assert st["bms"]["charge_fet"] is False
            act(sim, "mild")
            st = wait_status(sim, lambda s: s["charger"]["state"] == "charging" and s["charger"]["relay"])
            assert st["bms"]["faults"] == []
    finally:
        sim.stop()
