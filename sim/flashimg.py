"""Create the simulator's 4 MB flash file (host CPython):

    create(path, version)  -> bootloader at 0x1000, the binary partition table at 0x8000
                              (from boards/SMARTBMS/partitions.csv), erased otadata and a
                              valid generated app image carrying `version` in ota_0.
    write_app(path, label, image)  -> put an image into a slot (tests).
    python3 sim/flashimg.py PATH VERSION
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import esp_image  # noqa: E402

FLASH_SIZE = 0x400000


def layout():
    return {p.name: p for p in esp_image.partition_table()[0]}


def create(path, version, app_size=64 * 1024):
    parts, table = esp_image.partition_table()
    flash = bytearray(b"\xff" * FLASH_SIZE)
    boot = esp_image.bootloader_image()
    flash[0x1000:0x1000 + len(boot)] = boot
    flash[0x8000:0x8000 + len(table)] = table
    ota0 = {p.name: p for p in parts}["ota_0"]
    app = esp_image.app_image(version, app_size)
    flash[ota0.offset:ota0.offset + len(app)] = app
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(flash)
    os.replace(tmp, path)
    return path


def write_app(path, label, image):
    p = layout()[label]
    if len(image) > p.size:
        raise ValueError("image larger than %s" % label)
    with open(path, "r+b") as f:
        f.seek(p.offset)
        f.write(b"\xff" * p.size)
        f.seek(p.offset)
        f.write(image)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    create(sys.argv[1], sys.argv[2])
