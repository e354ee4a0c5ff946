"""A local reverse proxy for the multi-process benchmarks: TCP, round-robin per connection, on asyncio.

The scale-out benchmark runs two API processes behind one address, as a deployment runs replicas behind nginx
or a load balancer; this machine has neither, so this stands in for them. Each client connection goes to the
next backend in turn and stays there (HTTP keep-alive included: a client that reuses one connection talks to
one backend, as with a layer-4 balancer). A backend that refuses the connection is skipped for that
connection (the next one is tried); when none accepts, the client's connection is closed. Bytes are copied
both ways until either side closes; a half-close (EOF) is passed on.

    python -m tests.support.tcp_proxy --listen 127.0.0.1:8080 \
        --backend 127.0.0.1:8001 --backend 127.0.0.1:8002

``TcpProxy`` is the same thing inside an event loop (the unit test uses it); ``connections`` counts the
connections handed to each backend.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024


def address(text: str) -> tuple[str, int]:
    """``host:port`` as a pair."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, not {text!r}")
    return host, int(port)


class TcpProxy:
    def __init__(self, backends: list[tuple[str, int]], host: str = "127.0.0.1", port: int = 0) -> None:
        if not backends:
            raise ValueError("the proxy needs at least one backend")
        self.backends = list(backends)
        self.host, self.port = host, port
        self.connections = [0] * len(self.backends)
        self.refused = 0  # client connections closed because no backend accepted them
        self._next = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.serve_forever()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection to the next backend in turn that accepts one, or None."""
        for _ in range(len(self.backends)):
            index = self._next
            self._next = (self._next + 1) % len(self.backends)
            try:
                conn = await asyncio.open_connection(*self.backends[index])
            except OSError as exc:
                logger.warning("backend %s:%d refused a connection: %s", *self.backends[index], exc)
                continue
            self.connections[index] += 1
            return conn
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            backend = await self._connect()
            if backend is None:
                self.refused += 1
                return
            up_reader, up_writer = backend
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        except asyncio.CancelledError:
            pass  # close() ends the connections still open; the streams' callback would log it as an error
        finally:
            writer.close()
            self._tasks.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy ``source`` to ``sink`` until EOF (passed on as a half-close) or an error on either side."""
    try:
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (OSError, RuntimeError):  # reset by either side, or writing after the other side closed
        sink.close()


async def _main(listen: tuple[str, int], backends: list[tuple[str, int]]) -> None:
    proxy = TcpProxy(backends, *listen)
    await proxy.start()
    logger.warning("proxy on %s:%d -> %s", proxy.host, proxy.port, backends)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(proxy.serve_forever())
    await stop.wait()
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    await proxy.close()
    logger.warning("connections per backend: %s; refused: %d", proxy.connections, proxy.refused)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="TCP reverse proxy, round-robin per connection")
    p.add_argument("--listen", type=address, required=True, help="host:port to listen on")
    p.add_argument("--backend", type=address, action="append", required=True, help="host:port (repeat)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_main(args.listen, args.backend))


if __name__ == "__main__":
    main()
