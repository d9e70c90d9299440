# XOR of the bytes of a buffer, compiled to machine code (viper) on MicroPython: the ESP32
# image checksum covers every byte of a ~1.6 MB image. CPython cannot import this module
# (no `micropython`), and smartbms.ota.image falls back to a pure-Python fold.
import micropython


@micropython.viper
def xor_bytes(buf, n: int) -> int:
    p = ptr8(buf)  # noqa: F821 (viper built-in)
    x = 0
    i = 0
    while i < n:
        x ^= p[i]
        i += 1
    return x
