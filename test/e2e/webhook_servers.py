"""Local HTTP servers for the webhook end-to-end tests (127.0.0.1 only).

HookServer records every request and answers with whatever its `respond`
callable says; TokenServer is an OAuth2 token endpoint (client credentials
grant) that hands out numbered tokens; HangingServer accepts connections and
never answers.
"""

import base64
import hashlib
import hmac
import json
import selectors
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


class Request:
    def __init__(self, path, headers, body):
        self.path = path
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body
        self.at = time.monotonic()

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def webhook_id(self):
        return self.headers.get("webhook-id")


def verify_signature(secret, request):
    """Checks webhook-signature per the Standard Webhooks spec, computed here
    independently: base64 HMAC-SHA256 under the base64-decoded whsec_ key of
    "<webhook-id>.<webhook-timestamp>.<body>"."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_"):])
    assert len(key) == 32
    msg_id = request.headers["webhook-id"]
    ts = request.headers["webhook-timestamp"]
    signed = msg_id.encode() + b"." + ts.encode() + b"." + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # The header may carry several space-separated signatures.
    got = request.headers["webhook-signature"].split(" ")
    return f"v1,{expected}" in got


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class HookServer:
    """Records requests; respond(request, n) -> (status, headers, body),
    where n counts the requests so far (1 for the first)."""

    def __init__(self, respond=None):
        self.requests = []
        self.cond = threading.Condition()
        self.respond = respond or (lambda req, n: (200, {}, b""))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n)
                req = Request(self.path, self.headers, body)
                with outer.cond:
                    outer.requests.append(req)
                    count = len(outer.requests)
                    outer.cond.notify_all()
                status, headers, out = outer.respond(req, count)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, count, timeout=15):
        """Waits until at least count requests arrived; returns them all."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} requests, got {len(self.requests)} in {timeout}s")
                self.cond.wait(left)
            return list(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class TokenServer(HookServer):
    """An OAuth2 token endpoint: each request gets token-<n>, valid for
    expires_in seconds.  Records requests like HookServer."""

    def __init__(self, expires_in=3600):
        self.expires_in = expires_in

        def respond(req, n):
            form = parse_qs(req.body.decode())
            if form.get("grant_type") != ["client_credentials"]:
                return 400, {"content-type": "application/json"}, b'{"error": "unsupported_grant_type"}'
            body = json.dumps({"access_token": f"token-{n}", "token_type": "Bearer",
                               "expires_in": self.expires_in}).encode()
            return 200, {"content-type": "application/json"}, body

        super().__init__(respond)


class HangingServer:
    """An endpoint that hangs: it accepts every connection and reads what
    comes, but never answers.  open_connections() counts the connections
    the client has not closed yet."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(512)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.conns = set()
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.1):
                if key.fileobj is self.listener:
                    try:
                        conn, _ = self.listener.accept()
                    except OSError:
                        continue
                    conn.setblocking(False)
                    self.selector.register(conn, selectors.EVENT_READ)
                    with self.lock:
                        self.conns.add(conn)
                    continue
                conn = key.fileobj
                try:
                    data = conn.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.selector.unregister(conn)
                    conn.close()
                    with self.lock:
                        self.conns.discard(conn)

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def open_connections(self):
        with self.lock:
            return len(self.conns)

    def close(self):
        self.stopping = True
        self.thread.join(5)
        with self.lock:
            for conn in self.conns:
                conn.close()
            self.conns.clear()
        self.selector.close()
        self.listener.close()
