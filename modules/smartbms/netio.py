# Outgoing TCP connections that are always closed, for the OTA pull and the health check's
# request to the device's own web server. Two MicroPython facts make this its own module:
# - Stream.close() does nothing; `await wait_closed()` closes the socket. An lwIP socket left
#   open stays taken until its object is collected, and the ESP32 build has 16 in all.
# - asyncio.open_connection() waits for the connection inside itself: a wait_for() around it
#   cancels it with the new socket open and out of reach. connect() makes the socket itself,
#   so a connection that does not come up in time is closed like any other.
import sys

import asyncio

_MICROPYTHON = sys.implementation.name == "micropython"


def tls_context():
    """A TLS client context that encrypts without checking the server's certificate (the
    device has no CA store: the OTA image's hash, the broker's password are the checks);
    None where the build has no TLS (the host build)."""
    try:
        import ssl
    except ImportError:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if hasattr(ctx, "check_hostname"):  # CPython checks the name by default
        ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def connect(host, port, timeout_ms, ssl=None):
    """(reader, writer) of a connection made within timeout_ms (real ms); raises
    asyncio.TimeoutError or OSError and then leaves nothing open."""
    if not _MICROPYTHON:  # CPython's open_connection cleans up after a cancel
        conn = asyncio.open_connection(host, port, ssl=ssl) if ssl else asyncio.open_connection(host, port)
        return await asyncio.wait_for(conn, timeout_ms / 1000)
    stream = asyncio.StreamWriter(await connect_socket(host, port, timeout_ms, ssl), {})
    return stream, stream


async def connect_socket(host, port, timeout_ms, ssl=None):
    """MicroPython: a connected non-blocking socket (TLS-wrapped with ssl), made within
    timeout_ms, for a caller that reads and writes it itself (no asyncio stream module)."""
    s = _socket(host, port, ssl)
    try:
        await asyncio.wait_for(_connected(s), timeout_ms / 1000)
    except BaseException:
        s.close()
        raise
    return s


def _socket(host, port, ssl):
    # what open_connection() does before its wait: a non-blocking socket, connecting
    import socket
    from errno import EINPROGRESS

    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]  # blocking, as in asyncio
    s = socket.socket(ai[0], ai[1], ai[2])
    try:
        s.setblocking(False)
        try:
            s.connect(ai[-1])
        except OSError as e:
            if e.errno != EINPROGRESS:
                raise
        if ssl:
            s = ssl.wrap_socket(s, server_hostname=host, do_handshake_on_connect=False)
            s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def _connected(sock):
    # a generator is a coroutine on MicroPython: the wait open_connection() does, on asyncio
    # v1.28.0's own I/O queue (writable once connected, or failed; errors show at first use)
    from asyncio import core

    yield core._io_queue.queue_write(sock)


async def close(writer):
    """Close a stream for real (wait_closed), bounded, whatever state it is in."""
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 2)
    except Exception:  # noqa: BLE001 - already gone, or a TLS goodbye that never came
        pass
