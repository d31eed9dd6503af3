"""A business's webhook receiver for Ventana's tests, written apart from Ventana.

It checks every POST's `X-Hub-Signature-256` and `X-Ventana-Signature` with Python's own
`hmac`, so the tests do not take Ventana's word for its signatures. It prints one JSON line
per request to stdout (the test reads them) and is steered by `POST /control`:

    {"mode": "ok" | "fail" | "slow" | "hold" | "timeout", "challenge": "echo" | "wrong"}

`fail` answers 500; `slow` answers 200 after 1 s, `hold` after 5 s; `timeout` answers after
30 s (longer than the node waits). `challenge: wrong` answers the handshake with another challenge.

Usage: python3 webhook_receiver.py APP_SECRET VERIFY_TOKEN; it prints `listening <port>`.
"""

import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

SECRET = sys.argv[1].encode()
VERIFY_TOKEN = sys.argv[2]
STATE = {"mode": "ok", "challenge": "echo"}
LOCK = threading.Lock()


def say(record):
    with LOCK:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def hub_signature_ok(body, header):
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header or "")


def stamped_signature_ok(body, header, now):
    """Stripe-style: t=<unix>,v1=<hex HMAC of "<t>.<body>">, at most 5 minutes old."""
    parts = dict(p.split("=", 1) for p in (header or "").split(",") if "=" in p)
    try:
        stamp = int(parts.get("t", ""))
    except ValueError:
        return False
    signed = str(stamp).encode() + b"." + body
    expected = hmac.new(SECRET, signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", "")) and abs(now - stamp) <= 300


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        query = parse_qs(urlparse(self.path).query)
        mode = query.get("hub.mode", [""])[0]
        token = query.get("hub.verify_token", [""])[0]
        challenge = query.get("hub.challenge", [""])[0]
        say({"kind": "handshake", "token_ok": token == VERIFY_TOKEN})
        if mode != "subscribe" or token != VERIFY_TOKEN:
            return self.answer(403)
        if STATE["challenge"] == "wrong":
            return self.answer(200, b"not-the-challenge")
        self.answer(200, challenge.encode())

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path == "/control":
            STATE.update(json.loads(body))
            return self.answer(200)
        mode = STATE["mode"]
        record = {
            "kind": "event",
            "t": time.time(),
            "event_id": self.headers.get("X-Ventana-Event-Id"),
            "hub_ok": hub_signature_ok(body, self.headers.get("X-Hub-Signature-256")),
            "stamped_ok": stamped_signature_ok(
                body, self.headers.get("X-Ventana-Signature"), time.time()
            ),
            "mode": mode,
            "body": json.loads(body),
        }
        # Said on arrival, so the test sees the order events arrived in.
        status = 500 if mode == "fail" else 200
        record["status"] = status
        say(record)
        if mode == "slow":
            time.sleep(1)
        elif mode == "hold":
            time.sleep(5)
        elif mode == "timeout":
            time.sleep(30)
        try:
            self.answer(status)
        except (BrokenPipeError, ConnectionResetError):
            pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
say({"kind": "listening", "port": server.server_address[1]})
server.serve_forever()
