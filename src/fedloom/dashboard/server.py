"""The dashboard's web server: the standard library's threading HTTP server, hardened.

Why the standard library: the dashboard serves a few static files and a small read-only JSON
API to a handful of people; ``http.server.ThreadingHTTPServer`` does that with no dependency to
install, audit or keep up to date, and every security rule below is a few explicit lines.

Security rules, all enforced here:

* it listens on 127.0.0.1 unless given another host, and then only with an access token
  (:class:`DashboardConfig` refuses otherwise); on loopback it answers only requests whose
  ``Host`` is a loopback name, so a web page elsewhere cannot read it through DNS rebinding;
* away from loopback, every request needs the token: as ``Authorization: Bearer TOKEN``, or
  once as ``?token=TOKEN`` on a page, which sets an HttpOnly, SameSite=Strict cookie and
  redirects to the address without the token;
* control actions need ``Authorization: Bearer TOKEN`` on every request (never the cookie, so a
  page on another site cannot forge one), and are refused when no token is configured;
* every response carries a Content-Security-Policy that allows scripts, styles and requests from
  this server only, with no inline script or style anywhere; the token is never rendered;
* errors become a status and a one-line reason; a stack trace goes to the server's log only.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from fedloom.dashboard.api import Api, BadRequest, Conflict
from fedloom.dashboard.live import LiveState
from fedloom.dashboard.pages import assets, error_page, page
from fedloom.dashboard.queries import NotFound
from fedloom.store import StoreError

log = logging.getLogger("fedloom.dashboard")

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
MIN_TOKEN_LENGTH = 16
COOKIE = "fedloom_token"
MAX_BODY = 4096
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s]*")
_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)


@dataclass(frozen=True)
class DashboardConfig:
    """Where the dashboard reads, where it listens, and the token that guards it.

    ``host`` other than a loopback address needs ``token`` (at least 16 characters, no
    whitespace). ``port`` 0 picks a free port. ``poll_seconds`` is how often pages of runs in
    progress ask for news.
    """

    store: Path
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    poll_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.store, Path):
            raise TypeError(f"store must be a pathlib.Path, got {type(self.store).__name__}")
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"host must be a host name or address, got {self.host!r}")
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer in [0, 65535], got {port!r}")
        if self.token is not None and (
            len(self.token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in self.token)
        ):
            raise ValueError(
                f"token must be at least {MIN_TOKEN_LENGTH} characters with no whitespace "
                f"(got one of {len(self.token)} characters); make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe())'`"
            )
        if not self.loopback and self.token is None:
            raise ValueError(
                f"host {self.host!r} is not loopback: listening there needs an access token "
                "(--token), or keep the default host 127.0.0.1"
            )
        poll = self.poll_seconds
        if isinstance(poll, bool) or not isinstance(poll, int | float) or not 0.1 <= poll <= 3600:
            raise ValueError(f"poll_seconds must be in [0.1, 3600], got {poll!r}")

    @property
    def loopback(self) -> bool:
        """Whether the dashboard listens only on this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class DashboardServer(ThreadingHTTPServer):
    """The HTTP server; :func:`make_server` builds one, ``serve_forever`` runs it."""

    daemon_threads = True

    def __init__(self, config: DashboardConfig, live: LiveState | None) -> None:
        self.config = config
        self.api = Api(
            config.store, live=live, control=config.token is not None,
            poll_seconds=config.poll_seconds,
        )  # fmt: skip
        if ":" in config.host:
            self.address_family = socket.AF_INET6
        super().__init__((config.host, config.port), _Handler)

    @property
    def url(self) -> str:
        """The address to open, with the port actually bound."""
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.server_address[1]}/"


def make_server(config: DashboardConfig, *, live: LiveState | None = None) -> DashboardServer:
    """A dashboard server bound to ``config.host``/``config.port``, not yet serving."""
    return DashboardServer(config, live)


@contextmanager
def running(config: DashboardConfig, *, live: LiveState | None = None) -> Iterator[str]:
    """Serve in a background thread for the block's duration; yields the address."""
    server = make_server(config, live=live)
    thread = threading.Thread(target=server.serve_forever, name="fedloom-dashboard", daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "fedloom-dashboard"
    sys_version = ""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        log.info(
            "%s %s", self.address_string(), _TOKEN_IN_QUERY.sub(r"\1[redacted]", format % args)
        )

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        is_api = path == "/api" or path.startswith("/api/")
        try:
            if not self._host_allowed():
                raise _Refused(400, "this dashboard answers only to a loopback host name")
            if not self.server.config.loopback and not self._reader_allowed():
                if method == "GET" and not is_api and "token" in dict(parse_qsl(url.query)):
                    self._set_cookie_and_redirect(path, url.query)
                    return
                raise _Refused(401, "this dashboard needs its access token")
            if is_api:
                self._api(method, path, url.query)
            elif method != "GET":
                raise _Refused(405, f"{method} is not allowed here; pages are read with GET")
            else:
                self._page(path)
        except _Refused as refusal:
            self._fail(refusal.status, refusal.reason, is_api, refusal.headers)
        except BadRequest as error:
            self._fail(400, str(error), is_api)
        except NotFound as error:
            self._fail(404, str(error), is_api)
        except Conflict as error:
            self._fail(409, str(error), is_api)
        except StoreError as error:
            self._fail(503, f"the run store cannot be read: {error}", is_api)
        except Exception:
            log.exception("dashboard error on %s %s", method, path)
            self._fail(500, "internal error; the dashboard's log has the details", is_api)

    def _api(self, method: str, path: str, query: str) -> None:
        parts = [p for p in path.split("/") if p]
        if len(parts) == 4 and parts[1] == "runs" and parts[3] == "stop":
            if method != "POST":
                raise _Refused(405, "stop a run with POST", (("Allow", "POST"),))
            self._discard_body()
            self._require_control_token()
            origin = f"dashboard, client {self.client_address[0]}"
            self._json(202, self.server.api.stop(parts[2], origin=origin))
            return
        if method != "GET":
            raise _Refused(405, f"{method} is not allowed on {path}; the API is read with GET")
        self._json(200, self.server.api.get(path, query))

    def _page(self, path: str) -> None:
        if path in ("/", "/index.html"):
            self._send(200, page("index").body, page("index").content_type)
        elif path == "/compare":
            self._send(200, page("compare").body, page("compare").content_type)
        elif path.startswith("/runs/") and path.count("/") == 2:
            self.server.api.check_run(path.removeprefix("/runs/"))
            self._send(200, page("run").body, page("run").content_type)
        elif path.startswith("/static/"):
            asset = assets().get(path.removeprefix("/static/"))
            if asset is None:
                raise NotFound(f"no file {path}")
            self._send(200, asset.body, asset.content_type, cache=True)
        else:
            raise NotFound(f"no page {path}")

    def _host_allowed(self) -> bool:
        if not self.server.config.loopback:
            return True
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name.strip("[]") in LOOPBACK_NAMES

    def _reader_allowed(self) -> bool:
        if self._bearer_ok():
            return True
        cookies = self.headers.get("Cookie", "")
        for part in cookies.split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and self._token_matches(value):
                return True
        return False

    def _require_control_token(self) -> None:
        if self.server.config.token is None:
            raise _Refused(
                403, "control actions are disabled; start the dashboard with --token to enable "
                "them"
            )  # fmt: skip
        if not self._bearer_ok():
            raise _Refused(
                401, "stopping a run needs the dashboard's access token",
                (("WWW-Authenticate", 'Bearer realm="fedloom"'),),
            )  # fmt: skip

    def _bearer_ok(self) -> bool:
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self._token_matches(value.strip())

    def _token_matches(self, candidate: str) -> bool:
        token = self.server.config.token
        return token is not None and hmac.compare_digest(candidate.encode(), token.encode())

    def _set_cookie_and_redirect(self, path: str, query: str) -> None:
        params = parse_qsl(query, keep_blank_values=True)
        given = dict(params).get("token", "")
        if not self._token_matches(given):
            raise _Refused(401, "this dashboard needs its access token; that one is wrong")
        rest = urlencode([(k, v) for k, v in params if k != "token"])
        location = quote(path) + (f"?{rest}" if rest else "")
        self.send_response(303)
        self._common_headers()
        self.send_header("Location", location)
        self.send_header("Set-Cookie", f"{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _discard_body(self) -> None:
        length_text = self.headers.get("Content-Length", "0")
        if not length_text.isdigit() or int(length_text) > MAX_BODY:
            raise _Refused(413, f"a control request's body must be under {MAX_BODY} bytes")
        self.rfile.read(int(length_text))

    def _json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
        self._send(status, body, "application/json")

    def _fail(
        self, status: int, reason: str, is_api: bool, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        titles = {400: "Bad request", 401: "Token needed", 403: "Forbidden", 404: "Not found",
                  405: "Method not allowed", 409: "Conflict", 413: "Too large",
                  500: "Internal error", 503: "Store unavailable"}  # fmt: skip
        title = titles.get(status, "Error")
        if is_api:
            body = json.dumps({"error": reason, "status": status}).encode()
            self._send(status, body, "application/json", headers=headers)
        else:
            body = error_page(status, title, reason)
            self._send(status, body, "text/html; charset=utf-8", headers=headers)

    def _send(
        self, status: int, body: bytes, content_type: str, *, cache: bool = False,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:  # fmt: skip
        self.send_response(status)
        self._common_headers()
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _common_headers(self) -> None:
        for name, value in _HEADERS:
            self.send_header(name, value)


class _Refused(Exception):
    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers
