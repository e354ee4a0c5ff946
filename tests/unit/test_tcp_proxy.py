"""tests/support/tcp_proxy.py, the local reverse proxy of the scale-out benchmark: connections go
round-robin to the backends, bytes pass both ways unchanged (a half-close too), a refusing backend is skipped,
and with none left the client's connection is closed."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.support.tcp_proxy import TcpProxy, address

LIMIT = 1 << 20  # line length of the test's streams (one line is bigger than a read of the proxy)


async def _backend(name: bytes) -> asyncio.Server:
    """A server that answers each line with ``name: line`` and, at EOF, with ``name: bye``, then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(name + b": " + line)
            await writer.drain()
        writer.write(name + b": bye\n")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, limit=LIMIT)


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket is closed


async def _talk(port: int, lines: list[bytes]) -> list[bytes]:
    """Send ``lines`` on one connection, half-close it, and read every line of the answer until EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=LIMIT)
    answers = []
    for line in lines:
        writer.write(line + b"\n")
        await writer.drain()
        answers.append(await reader.readline())
    writer.write_eof()
    answers += [line async for line in reader]
    writer.close()
    return answers


def test_connections_go_round_robin_and_bytes_pass_both_ways() -> None:
    async def scenario() -> tuple[list[list[bytes]], list[int]]:
        a, b = await _backend(b"a"), await _backend(b"b")
        proxy = TcpProxy([("127.0.0.1", _port(a)), ("127.0.0.1", _port(b))])
        await proxy.start()
        try:
            big = b"x" * 200_000  # more than one read of the proxy
            answers = [await _talk(proxy.port, [b"one", big]) for _ in range(4)]
        finally:
            await proxy.close()
            a.close()
            b.close()
        return answers, proxy.connections

    answers, connections = asyncio.run(scenario())
    big = b"x" * 200_000
    assert [lines[0] for lines in answers] == [b"a: one\n", b"b: one\n", b"a: one\n", b"b: one\n"]
    assert all(lines[1] == lines[0][:3] + big + b"\n" for lines in answers)  # one connection, one backend
    assert all(lines[2:] == [lines[0][:3] + b"bye\n"] for lines in answers)  # the half-close reached it
    assert connections == [2, 2]


def test_a_refusing_backend_is_skipped_and_none_left_closes_the_client() -> None:
    async def scenario() -> tuple[list[list[bytes]], list[int], bytes, int]:
        a = await _backend(b"a")
        proxy = TcpProxy([("127.0.0.1", _closed_port()), ("127.0.0.1", _port(a))])
        await proxy.start()
        dead = TcpProxy([("127.0.0.1", _closed_port())])
        await dead.start()
        try:
            answers = [await _talk(proxy.port, [b"hi"]) for _ in range(3)]
            reader, writer = await asyncio.open_connection("127.0.0.1", dead.port)
            writer.write(b"hello\n")
            nothing = await asyncio.wait_for(reader.read(), timeout=30)
            writer.close()
        finally:
            await proxy.close()
            await dead.close()
            a.close()
        return answers, proxy.connections, nothing, dead.refused

    answers, connections, nothing, refused = asyncio.run(scenario())
    assert answers == [[b"a: hi\n", b"a: bye\n"]] * 3
    assert connections == [0, 3]
    assert nothing == b"" and refused == 1


@pytest.mark.parametrize("text", ["8080", "host:", ":80", "host:port"])
def test_an_address_needs_host_and_port(text: str) -> None:
    with pytest.raises(ValueError):
        address(text)
    assert address("127.0.0.1:8080") == ("127.0.0.1", 8080)
