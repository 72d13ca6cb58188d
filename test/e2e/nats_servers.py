"""NATS servers and a JetStream client for the relay end-to-end tests.

NatsServer runs Debian's nats-server with JetStream on 127.0.0.1 (only) on a
free port, its store in a directory of the run directory; it can be killed
with SIGKILL and started again on the same port and store.  nats_tool() is
test/e2e/nats_tool.c, the NATS C client compiled once per test session.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from conftest import PGDATA, REPO_DIR

NATS_SERVER = shutil.which("nats-server") or "/usr/bin/nats-server"
# The cluster's run directory: where scripts/test.sh keeps pgdata.
RUN_DIR = Path(PGDATA).parent

_tool = None


def nats_tool_path():
    """Compiles test/e2e/nats_tool.c (once) and returns the binary."""
    global _tool
    if _tool is None:
        out = RUN_DIR / "nats_tool"
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out),
             str(REPO_DIR / "test" / "e2e" / "nats_tool.c"), "-lnats"],
            check=True, capture_output=True, text=True,
        )
        _tool = str(out)
    return _tool


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Message:
    def __init__(self, line):
        self.stream_seq = line.get("stream_seq")
        self.subject = line.get("subject")
        self.headers = line.get("headers", {})
        self.data = base64.b64decode(line["data"])

    @property
    def json(self):
        return json.loads(self.data)

    @property
    def seq(self):
        return int(self.headers["Notify-Seq"])


class NatsServer:
    """nats-server -js on 127.0.0.1.  config: extra lines for its
    configuration file (authorization, tls)."""

    def __init__(self, name, config="", tls=False):
        self.name = name
        self.port = free_port()
        self.dir = RUN_DIR / f"nats-{name}"
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "store").mkdir(parents=True)
        self.conf = self.dir / "nats.conf"
        self.conf.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{ store_dir: "{self.dir / "store"}" }}\n'
            + config
        )
        self.scheme = "tls" if tls else "nats"
        self.proc = None
        self.tool_args = []

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self):
        log = open(self.dir / "nats.log", "ab")
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-c", str(self.conf)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nats-server {self.name} exited: "
                                       + (self.dir / "nats.log").read_text()[-2000:])
                time.sleep(0.05)
        raise RuntimeError(f"nats-server {self.name} did not start")

    def kill(self):
        """SIGKILL: no shutdown of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def tool(self, *args, timeout=120):
        out = subprocess.run(
            [nats_tool_path(), "-s", self.url, *self.tool_args, *map(str, args)],
            check=True, capture_output=True, text=True, timeout=timeout,
        ).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def dump(self, stream):
        """Every message of the stream, in stream order."""
        return [Message(l) for l in self.tool("dump", stream)]

    def sub(self, stream, filter_subject, count, timeout_ms=1000):
        """What a consumer with the filter subject gets, from the start."""
        return [Message(l) for l in self.tool("sub", stream, filter_subject, count, timeout_ms)]

    def info(self, stream):
        return self.tool("info", stream)[0]

    def add_stream(self, stream, subject):
        self.tool("addstream", stream, subject)


class DelayProxy:
    """A TCP proxy on 127.0.0.1 in front of a NATS server that holds back
    what the server sends (PubAcks among it) for `delay` seconds per chunk,
    in order; what the client sends passes at once."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.delay = 0.0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closed = False

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self):
        import threading

        self.sock.listen(16)

        def pump(src, dst, delayed):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    if delayed and self.delay > 0:
                        time.sleep(self.delay)
                    dst.sendall(data)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def accept():
            while not self.closed:
                try:
                    client, _ = self.sock.accept()
                except OSError:
                    return
                server = socket.create_connection(("127.0.0.1", self.target_port))
                threading.Thread(target=pump, args=(client, server, False), daemon=True).start()
                threading.Thread(target=pump, args=(server, client, True), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return self

    def stop(self):
        self.closed = True
        self.sock.close()
