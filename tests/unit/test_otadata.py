# otadata (ESP-IDF's boot choice), the esp32.Partition shim over the simulated flash file
# and the simulated bootloader, on both runtimes.
import otaflash  # first: puts the esp32 shim on the path under pytest
import esp32
import sim_boot
import esp_image
from smartbms import ota
from smartbms.ota import otadata
from testutil import raises

quiet = lambda *a: None  # noqa: E731


def _status():
    ota._parts = None  # a device reads its layout once per boot; these tests boot many times
    return ota.status()


def test_crc_matches_esp_idf():
    # values ESP-IDF's otatool computes (binascii.crc32(seq, 0xFFFFFFFF))
    assert otadata.crc(1) == 0x4743989A
    e = otadata.encode(1, otadata.NEW)
    assert len(e) == 32 and e[4:24] == b"\xff" * 20
    assert otadata.decode(e) == (1, otadata.NEW, True)


def test_erased_and_corrupt_entries_are_invalid():
    assert otadata.decode(b"\xff" * 32)[2] is False
    e = bytearray(otadata.encode(3, otadata.VALID))
    e[28] ^= 1
    assert otadata.decode(e)[2] is False


def test_active_entry_selection():
    a = otadata.decode(otadata.encode(1, otadata.VALID))
    b = otadata.decode(otadata.encode(2, otadata.VALID))
    erased = otadata.decode(b"\xff" * 32)
    assert otadata.active([a, b]) == 1
    assert otadata.active([b, a]) == 0
    assert otadata.active([erased, erased]) == -1
    assert otadata.active([a, otadata.decode(otadata.encode(2, otadata.ABORTED))]) == 0
    assert otadata.active([a, otadata.decode(otadata.encode(2, otadata.INVALID))]) == 0
    assert otadata.slot_of(1) == 0 and otadata.slot_of(2) == 1 and otadata.slot_of(5) == 0


def test_next_seq_and_sector_alternate():
    erased = otadata.decode(b"\xff" * 32)
    assert otadata.next_seq([erased, erased], 0) == 1
    assert otadata.next_seq([erased, erased], 1) == 2
    e3 = otadata.decode(otadata.encode(3, otadata.VALID))
    assert otadata.next_seq([e3, erased], 1) == 4
    assert otadata.next_seq([e3, erased], 0) == 5
    assert otadata.write_sector_for([e3, erased]) == 1
    assert otadata.write_sector_for([erased, e3]) == 0
    assert otadata.write_sector_for([erased, erased]) == 0


def test_partition_table_and_blocks():
    otaflash.fresh("blocks")
    run = esp32.Partition(esp32.Partition.RUNNING)
    assert run.info()[4] == "ota_0" and run.info()[2] == 0x10000 and run.info()[3] == 0x1D0000
    nxt = run.get_next_update()
    assert nxt.info()[4] == "ota_1"
    assert nxt.get_next_update().info()[4] == "ota_0"
    assert nxt.ioctl(4, 0) == 0x1D0000 // 4096 and nxt.ioctl(5, 0) == 4096
    assert [p.info()[4] for p in esp32.Partition.find(esp32.Partition.TYPE_APP)] == ["ota_0", "ota_1"]
    assert esp32.Partition.find(esp32.Partition.TYPE_DATA, label="otadata")[0].info()[2] == 0xD000
    buf = bytearray(4096)
    for i in range(4096):
        buf[i] = i & 0xFF
    nxt.writeblocks(2, buf)
    back = bytearray(4096)
    nxt.readblocks(2, back)
    assert back == buf
    # writing with an offset only programs (clears bits), as NOR flash does
    nxt.writeblocks(2, b"\x0f\xf0", 0)
    small = bytearray(2)
    nxt.readblocks(2, small, 0)
    assert small == bytearray([0x00 & 0x0F, 0x01 & 0xF0])
    nxt.ioctl(6, 2)
    nxt.readblocks(2, back)
    assert back == b"\xff" * 4096
    raises(OSError, nxt.readblocks, 0x1D0000 // 4096, buf)
    raises(OSError, nxt.writeblocks, -1, buf)


def test_set_boot_refuses_invalid_image_and_changes_nothing():
    otaflash.fresh("badboot")
    nxt = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
    before = esp32.otadata_entries()
    raises(OSError, nxt.set_boot)  # blank slot
    img = bytearray(esp_image.app_image("0.2.0", 8192))
    img[-1] ^= 1
    nxt.writeblocks(0, img)
    raises(OSError, nxt.set_boot)
    assert esp32.otadata_entries() == before
    assert esp32.Partition(esp32.Partition.BOOT).info()[4] == "ota_0"


def _install(path, label, version):
    img = esp_image.app_image(version, 8192)
    p = esp32.Partition(label)
    p.writeblocks(0, img + b"\xff" * (-len(img) % 4096))
    p.set_boot()


def test_update_boot_confirm_cycle():
    path = otaflash.fresh("cycle")
    assert sim_boot.boot(path, quiet) == ("ota_0", "undefined")
    _install(path, "ota_1", "0.2.0")
    assert esp32.Partition(esp32.Partition.BOOT).info()[4] == "ota_1"
    assert esp32.Partition(esp32.Partition.RUNNING).info()[4] == "ota_0"
    assert esp32.otadata_entries()[0][:2] == (2, otadata.NEW)
    assert sim_boot.boot(path, quiet) == ("ota_1", "pending_verify")
    st = _status()
    assert st["running"] == "ota_1" and st["running_version"] == "0.2.0"
    assert st["previous_version"] == "0.1.0" and st["pending_verify"] is True
    esp32.Partition.mark_app_valid_cancel_rollback()
    assert _status()["pending_verify"] is False
    assert sim_boot.boot(path, quiet) == ("ota_1", "valid")
    # the next update goes back to ota_0 with seq 3, written to the other sector
    _install(path, "ota_0", "0.3.0")
    e = esp32.otadata_entries()
    assert e[1][:2] == (3, otadata.NEW) and e[0][:2] == (2, otadata.VALID)
    assert sim_boot.boot(path, quiet) == ("ota_0", "pending_verify")
    assert _status()["running_version"] == "0.3.0"


def test_unconfirmed_image_rolls_back():
    path = otaflash.fresh("rollback")
    sim_boot.boot(path, quiet)
    esp32.Partition.mark_app_valid_cancel_rollback()  # nothing to confirm on erased otadata
    _install(path, "ota_1", "0.2.0")
    assert sim_boot.boot(path, quiet)[0] == "ota_1"
    # crash before healthy: the next boot finds it still PENDING_VERIFY
    assert sim_boot.boot(path, quiet) == ("ota_0", "undefined")
    assert esp32.otadata_entries()[0][:2] == (2, otadata.ABORTED)
    st = _status()
    assert st["running"] == "ota_0" and st["running_version"] == "0.1.0"
    assert st["previous_version"] == "0.2.0" and not st["pending_verify"]
    # and stays there
    assert sim_boot.boot(path, quiet)[0] == "ota_0"


def test_rollback_to_a_confirmed_slot():
    path = otaflash.fresh("rollback2")
    sim_boot.boot(path, quiet)
    _install(path, "ota_1", "0.2.0")
    sim_boot.boot(path, quiet)
    esp32.Partition.mark_app_valid_cancel_rollback()
    _install(path, "ota_0", "0.3.0")
    assert sim_boot.boot(path, quiet)[0] == "ota_0"
    assert sim_boot.boot(path, quiet) == ("ota_1", "valid")


def test_power_cut_during_otadata_write_keeps_the_old_choice():
    path = otaflash.fresh("cut")
    sim_boot.boot(path, quiet)
    _install(path, "ota_1", "0.2.0")
    sim_boot.boot(path, quiet)
    esp32.Partition.mark_app_valid_cancel_rollback()
    _install(path, "ota_0", "0.3.0")  # goes to sector 1
    # the cut hit after the sector erase, before the entry was written
    otaflash.write_slot(path, 0xD000 + 4096, b"\xff" * 32)
    assert sim_boot.boot(path, quiet) == ("ota_1", "valid")
    # and a torn entry (half written) is rejected by its CRC
    e = bytearray(otadata.encode(3, otadata.NEW))
    e[28:] = b"\xff\xff\xff\xff"
    otaflash.write_slot(path, 0xD000 + 4096, bytes(e))
    assert sim_boot.boot(path, quiet) == ("ota_1", "valid")


def test_boot_skips_a_slot_with_a_broken_image():
    path = otaflash.fresh("broken")
    sim_boot.boot(path, quiet)
    _install(path, "ota_1", "0.2.0")
    otaflash.write_slot(path, otaflash.OTA1 + 1000, b"\x00\x00\x00\x00")  # bit rot after set_boot
    assert sim_boot.boot(path, quiet)[0] == "ota_0"
    assert esp32.otadata_entries()[0][1] == otadata.INVALID
