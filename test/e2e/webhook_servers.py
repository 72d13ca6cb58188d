"""Local HTTP servers for the webhook end-to-end tests (127.0.0.1 only).

HookServer records every request and answers with whatever its `respond`
callable says; TokenServer is an OAuth2 token endpoint (client credentials
grant) that hands out numbered tokens.
"""

import base64
import hashlib
import hmac
import json
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
