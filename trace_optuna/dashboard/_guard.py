"""A WSGI layer in front of optuna-dashboard: who may talk to it, and what they may do.

optuna-dashboard checks nothing: any request that reaches its port is answered, including one
sent by a web page in the user's own browser (a DNS name rebound to 127.0.0.1 sends its own
``Host``), and it takes writes (notes, human feedback, deleting a study). :class:`Guard` wraps
its WSGI app and, before a request reaches it:

* **Host.** Only a ``Host`` naming the bound address (``127.0.0.1``, ``localhost`` and
  ``[::1]`` with the port, for a loopback bind) or matching an allowed pattern is answered;
  anything else gets 403 saying which host was refused and how to allow it.
* **Token.** With a token in force, a request must carry it: the cookie set by opening the
  printed ``...?token=...`` URL (HttpOnly, SameSite=Strict; the server then redirects to the
  URL without the token), or ``Authorization: Bearer TOKEN`` for scripts. Otherwise 401.
* **Writes** (POST, PUT, PATCH, DELETE): an ``Origin`` other than the dashboard's own (or an
  allowed one) and a ``Sec-Fetch-Site`` other than ``same-origin``/``none`` are refused; a
  body must be JSON (every write optuna-dashboard has reads JSON). ``read_only`` refuses every
  write, and the page says so in a banner.
* **Headers** on every answer: ``X-Frame-Options: DENY`` and ``Content-Security-Policy:
  frame-ancestors 'none'`` (no framing), ``X-Content-Type-Options: nosniff`` and
  ``Referrer-Policy: no-referrer`` (the token never leaks in a Referer). CORS headers only for
  the allowed origins.

It is ours, not a patch of optuna-dashboard's files: any WSGI app can be wrapped.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
import dataclasses
import fnmatch
import hmac
import http.cookies
import ipaddress
from typing import Any
import urllib.parse

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

TOKEN_PARAMETER = "token"
ALLOWED_HOSTS_FLAG = "--allowed-hosts"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SECURITY_HEADERS = [
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]
READ_ONLY_BANNER = (
    '<div id="trace-optuna-read-only" style="position:fixed;bottom:0;left:0;right:0;'
    "z-index:99999;padding:4px 12px;background:#fff3cd;color:#664d03;font:13px sans-serif;"
    'text-align:center;border-top:1px solid #ffe69c">Read-only dashboard: changes (notes, '
    "feedback, deletions) are refused.</div>"
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bracketed(host: str) -> str:
    """``host`` as it stands in a URL or a ``Host`` header: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def cookie_name(port: int) -> str:
    """The token cookie's name; one per port, as browsers share cookies across ports."""
    return f"trace_optuna_dashboard_{port}"


@dataclasses.dataclass(frozen=True)
class GuardSettings:
    """What :class:`Guard` lets through.

    Attributes:
        host: The address the server is bound to (``127.0.0.1``, ``0.0.0.0``, ...).
        port: Its port.
        allowed_hosts: More ``Host`` values to answer: patterns such as ``dash.internal``,
            ``*.internal:8080`` (``fnmatch``, case-insensitive). A pattern without a port
            matches any port (behind a reverse proxy the ``Host`` is the proxy's).
        token: The token every request must carry, or None for none.
        read_only: Refuse every write.
        allowed_origins: Origins (``https://app.example``) whose pages may call the
            dashboard's API, with CORS headers; none by default.
    """

    host: str
    port: int
    allowed_hosts: tuple[str, ...] = ()
    token: str | None = None
    read_only: bool = False
    allowed_origins: tuple[str, ...] = ()

    def own_hosts(self) -> list[str]:
        """The ``Host`` values that name the bound address itself."""
        if is_loopback(self.host):
            names = ["127.0.0.1", "localhost", "[::1]"]
        elif self.host in ("0.0.0.0", "::"):
            names = []  # every address: the allowed hosts say which names are right
        else:
            names = [bracketed(self.host)]
        return [f"{name}:{self.port}" for name in names]

    def host_allowed(self, value: str) -> bool:
        value = value.strip().lower()
        if value in self.own_hosts():
            return True
        name = value.rsplit(":", 1)[0] if not value.endswith("]") else value
        for pattern in self.allowed_hosts:
            pattern = pattern.strip().lower()
            has_port = ":" in pattern and not pattern.endswith("]")
            if fnmatch.fnmatchcase(value if has_port else name, pattern):
                return True
        return False


class Guard:
    """optuna-dashboard's WSGI app behind the checks of :class:`GuardSettings`."""

    def __init__(self, app: WSGIApp, settings: GuardSettings) -> None:
        self.app = app
        self.settings = settings
        self.cookie = cookie_name(settings.port)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        settings = self.settings
        host = environ.get("HTTP_HOST", "")
        if not settings.host_allowed(host):
            allowed = ", ".join(settings.own_hosts() + list(settings.allowed_hosts))
            return self._refuse(
                start_response,
                "403 Forbidden",
                f"Host {host!r} is not allowed: this dashboard answers {allowed or 'no host'}. "
                f"If that name is right, start it with {ALLOWED_HOSTS_FLAG} {host or 'NAME'}.",
            )
        method = environ.get("REQUEST_METHOD", "GET").upper()
        origin = environ.get("HTTP_ORIGIN")
        if method == "OPTIONS" and origin in settings.allowed_origins:
            return self._preflight(start_response, origin)
        if settings.token is not None:
            query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
            given = query.get(TOKEN_PARAMETER, [None])[0]
            if given is not None and method == "GET":
                return self._take_token(environ, start_response, given)
            if not self._has_token(environ):
                return self._refuse(
                    start_response,
                    "401 Unauthorized",
                    "This dashboard needs its token: open the URL `trace-optuna dashboard` "
                    "printed (it ends in ?token=...), or send 'Authorization: Bearer TOKEN'.",
                )
        if method in UNSAFE_METHODS:
            problem = self._write_problem(environ, host, origin)
            if problem is not None:
                return self._refuse(start_response, "403 Forbidden", problem)
        cors = origin if origin in settings.allowed_origins else None
        banner = settings.read_only and method == "GET"
        return self._forward(environ, start_response, cors, banner)

    # -- the checks -----------------------------------------------------------------------

    def _is_token(self, given: str) -> bool:
        token = self.settings.token
        assert token is not None
        return hmac.compare_digest(given.encode(), token.encode())  # in constant time

    def _has_token(self, environ: dict[str, Any]) -> bool:
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        if authorization.startswith("Bearer "):
            return self._is_token(authorization[7:].strip())
        cookies = http.cookies.SimpleCookie()
        try:
            cookies.load(environ.get("HTTP_COOKIE", ""))
        except http.cookies.CookieError:
            return False
        morsel = cookies.get(self.cookie)
        return morsel is not None and self._is_token(morsel.value)

    def _write_problem(self, environ: dict[str, Any], host: str, origin: str | None) -> str | None:
        settings = self.settings
        if settings.read_only:
            return "This dashboard is read-only: changes (notes, feedback, deletions) are refused."
        allowed_origin = origin in settings.allowed_origins
        if origin is not None and not allowed_origin:
            if origin.lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
                return (
                    f"A change from origin {origin!r} is refused: only the dashboard's own "
                    "page may write."
                )
        fetch_site = environ.get("HTTP_SEC_FETCH_SITE")
        if (
            fetch_site is not None
            and fetch_site not in ("same-origin", "none")
            and not allowed_origin
        ):
            return f"A change from another site (Sec-Fetch-Site: {fetch_site}) is refused."
        length = environ.get("CONTENT_LENGTH") or "0"
        has_body = length.strip() not in ("", "0")
        content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if has_body and content_type != "application/json":
            return f"A change must be sent as application/json, not {content_type or 'no type'!r}."
        return None

    # -- the answers ----------------------------------------------------------------------

    def _refuse(
        self, start_response: Callable[..., Any], status: str, message: str
    ) -> list[bytes]:
        body = (message + "\n").encode()
        start_response(
            status,
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                *SECURITY_HEADERS,
            ],
        )
        return [body]

    def _take_token(
        self, environ: dict[str, Any], start_response: Callable[..., Any], given: str
    ) -> list[bytes]:
        """``?token=...``: set the cookie and redirect to the same URL without the token."""
        if not self._is_token(given):
            return self._refuse(
                start_response, "401 Unauthorized", "Wrong token: open the URL printed at start."
            )
        query = [
            (key, value)
            for key, value in urllib.parse.parse_qsl(
                environ.get("QUERY_STRING", ""), keep_blank_values=True
            )
            if key != TOKEN_PARAMETER
        ]
        location = urllib.parse.quote(environ.get("PATH_INFO", "/") or "/")
        if query:
            location += "?" + urllib.parse.urlencode(query)
        secure = "; Secure" if environ.get("wsgi.url_scheme") == "https" else ""
        cookie = f"{self.cookie}={given}; Path=/; HttpOnly; SameSite=Strict{secure}"
        start_response(
            "303 See Other",
            [
                ("Location", location),
                ("Set-Cookie", cookie),
                ("Content-Length", "0"),
                *SECURITY_HEADERS,
            ],
        )
        return [b""]

    def _preflight(self, start_response: Callable[..., Any], origin: str) -> list[bytes]:
        start_response("204 No Content", [*_cors_headers(origin), *SECURITY_HEADERS])
        return [b""]

    def _forward(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        cors: str | None,
        banner: bool,
    ) -> Iterable[bytes]:
        captured: dict[str, Any] = {}

        def guarded_start(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            headers = _with_security_headers(headers)
            if cors is not None:
                headers += _cors_headers(cors)
            rewrite = banner and _is_html(headers)
            captured.update(status=status, headers=headers, exc_info=exc_info, rewrite=rewrite)
            if rewrite:
                return lambda data: None  # the body is rewritten below; written then
            return start_response(status, headers, exc_info)

        result = self.app(environ, guarded_start)
        if not captured.get("rewrite"):
            return result
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        body = _with_banner(body)
        stale = {"content-length", "etag", "last-modified"}  # a cached page has no banner
        headers = [(k, v) for k, v in captured["headers"] if k.lower() not in stale]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers, captured["exc_info"])
        return [body]


def _cors_headers(origin: str) -> list[tuple[str, str]]:
    return [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE"),
        ("Access-Control-Allow-Headers", "Content-Type, Authorization"),
        ("Vary", "Origin"),
    ]


def _with_security_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with :data:`SECURITY_HEADERS`; an app's own CSP keeps its rules and gains
    ``frame-ancestors 'none'`` (optuna-dashboard sends one for its page)."""
    names = {name.lower() for name, _ in SECURITY_HEADERS}
    kept, extra = [], []
    for name, value in headers:
        if name.lower() == "content-security-policy":
            extra.append((name, f"{value.rstrip('; ')}; frame-ancestors 'none'"))
        elif name.lower() not in names:
            kept.append((name, value))
    ours = [(k, v) for k, v in SECURITY_HEADERS if not (extra and k == "Content-Security-Policy")]
    return kept + extra + ours


def _is_html(headers: list[tuple[str, str]]) -> bool:
    encoded = any(k.lower() == "content-encoding" for k, _ in headers)
    return not encoded and any(
        k.lower() == "content-type" and "text/html" in v for k, v in headers
    )


def _with_banner(body: bytes) -> bytes:
    index = body.lower().rfind(b"</body>")
    if index < 0:
        return body
    return body[:index] + READ_ONLY_BANNER.encode() + body[index:]
