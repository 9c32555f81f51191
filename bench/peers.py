"""The peers reactorkit is measured against, each the idiomatic minimal server.

    python bench/peers.py KIND PORT

KIND is one of:
  asyncio-echo, uvloop-echo, twisted-echo   RFC 862 echo (asyncio.Protocol,
                                            the same on uvloop, Twisted Protocol)
  asyncio-ping, uvloop-ping                 a line server answering "+PONG"
                                            to every line (line-command's PING)
  asyncio-chat, uvloop-chat                 broadcast every line to every
                                            other client (chat's fan-out)
  epoll-echo                                echo on a hand-written loop over
                                            select.epoll, in pure Python: what
                                            Python itself costs, no framework

Each prints "ready" once listening and runs until killed.
"""

from __future__ import annotations

import asyncio
import select
import socket
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Ping(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        count = self.buffer.count(b"\n")
        if count:
            self.buffer = self.buffer[self.buffer.rindex(b"\n") + 1 :]
            self.transport.write(b"+PONG\r\n" * count)


class Chat(asyncio.Protocol):
    members: set[Chat] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""
        self.members.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.members.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            out = b"<guest> " + line.rstrip(b"\r") + b"\r\n"
            for member in self.members:
                if member is not self:
                    member.transport.write(out)


PROTOCOLS = {"echo": Echo, "ping": Ping, "chat": Chat}


async def serve_asyncio(protocol: type[asyncio.Protocol], port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def serve_twisted_echo(port: int) -> None:
    from twisted.internet import protocol, reactor

    class TwistedEcho(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)

    factory = protocol.Factory.forProtocol(TwistedEcho)
    reactor.listenTCP(port, factory, backlog=4096, interface="127.0.0.1")
    print("ready", flush=True)
    reactor.run()


def serve_epoll_echo(port: int) -> None:
    """Echo on select.epoll directly: a dict of sockets and a loop, nothing else.

    Level-triggered. What send() does not take is kept and the connection
    stops reading until it has gone (EPOLLOUT only), so memory stays bounded.
    """
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    listener.setblocking(False)
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    lfd = listener.fileno()
    socks: dict[int, socket.socket] = {}
    unsent: dict[int, bytes] = {}
    print("ready", flush=True)

    def close(fd: int) -> None:
        ep.unregister(fd)
        socks.pop(fd).close()
        unsent.pop(fd, None)

    while True:
        for fd, _events in ep.poll():
            if fd == lfd:
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    except OSError:
                        break  # EMFILE and the like: retried on the next event
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    socks[sock.fileno()] = sock
                    ep.register(sock.fileno(), select.EPOLLIN)
                continue
            sock = socks[fd]
            data = unsent.get(fd, b"")
            try:
                if not data:
                    data = sock.recv(65536)
                    if not data:
                        close(fd)
                        continue
                try:
                    sent = sock.send(data)
                except BlockingIOError:
                    sent = 0
            except BlockingIOError:
                continue
            except OSError:
                close(fd)
                continue
            if sent < len(data):
                if fd not in unsent:
                    ep.modify(fd, select.EPOLLOUT)
                unsent[fd] = data[sent:]
            elif unsent.pop(fd, None) is not None:
                ep.modify(fd, select.EPOLLIN)


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    runtime, _, what = kind.partition("-")
    if runtime == "epoll":
        serve_epoll_echo(port)
        return
    if runtime == "twisted":
        serve_twisted_echo(port)
        return
    if runtime == "uvloop":
        import uvloop

        uvloop.run(serve_asyncio(PROTOCOLS[what], port))
    else:
        asyncio.run(serve_asyncio(PROTOCOLS[what], port))


if __name__ == "__main__":
    main()
