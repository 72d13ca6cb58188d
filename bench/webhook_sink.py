#!/usr/bin/env python3
"""A webhook sink for bench/webhook_bench.sh, and a plain client to measure it.

  webhook_sink.py serve PORTFILE     listen on 127.0.0.1 (a free port, written
                                     to PORTFILE); answer every POST with 200 at
                                     once (HTTP/1.1, keep-alive); on SIGUSR1
                                     print "<requests> <first> <last>" (times of
                                     the first and last request, epoch seconds)
  webhook_sink.py client PORT SECONDS CONNECTIONS BODYFILE
                                     POST the body over CONNECTIONS keep-alive
                                     connections for SECONDS; print requests/s
"""
import asyncio
import os
import signal
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class Stats:
    count = 0
    first = 0.0
    last = 0.0


class Sink(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        out = []
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buf[:end].lower()
            i = head.find(b"content-length:")
            length = 0
            if i >= 0:
                j = head.find(b"\r\n", i)
                length = int(head[i + 15:j if j >= 0 else len(head)])
            if len(self.buf) < end + 4 + length:
                break
            self.buf = self.buf[end + 4 + length:]
            now = time.time()
            if Stats.count == 0:
                Stats.first = now
            Stats.last = now
            Stats.count += 1
            out.append(RESPONSE)
        if out:
            self.transport.write(b"".join(out))


async def serve(portfile):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    loop.add_signal_handler(signal.SIGUSR1,
                            lambda: print(Stats.count, Stats.first, Stats.last, flush=True))
    with open(portfile + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(portfile + ".tmp", portfile)
    await asyncio.Event().wait()


async def client(port, seconds, conns, body):
    req = (b"POST /hook HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
           b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    done = 0
    deadline = time.monotonic() + seconds

    async def one():
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            writer.write(req)
            await reader.readuntil(b"\r\n\r\n")   # content-length: 0
            done += 1
        writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*[one() for _ in range(conns)])
    print(f"{done / (time.monotonic() - t0):.0f}")


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2]))
    else:
        with open(sys.argv[5], "rb") as f:
            body = f.read()
        asyncio.run(client(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), body))
