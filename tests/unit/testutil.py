# Helpers shared by the unit tests; they work the same under pytest (CPython) and under
# tests/mpy_runner.py (MicroPython unix port).
import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"


class SkipTest(Exception):
    pass


def skip(reason):
    if IS_MICROPYTHON:
        raise SkipTest(reason)
    import pytest

    pytest.skip(reason)


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raised; fail if it raised nothing or another type."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError("%s did not raise %s" % (getattr(fn, "__name__", fn), exc_type.__name__))


def approx(a, b, tol=1e-6):
    return abs(a - b) <= tol


def run_async(coro):
    import asyncio

    return asyncio.run(coro)
