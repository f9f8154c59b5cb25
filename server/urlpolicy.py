"""What a caller may make the server open, and how secrets are kept out of every text we emit.

Pulled sources: only the schemes in `--source-schemes` (default rtsp, rtsps) with a host; FFmpeg gets a
server-side `protocol_whitelist`, so a redirect or a playlist cannot open `file:` or `http:` behind our
back; caller options pass only through `ALLOWED_OPTIONS` with bounded values.

Redaction happens at the source: `redact` removes user:password from URLs, secret-looking query values
and `password=` style pairs from any text (an FFmpeg error, a Redis error) before it is logged,
published or returned.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

DEFAULT_SCHEMES = ("rtsp", "rtsps")
# protocols FFmpeg may use underneath an RTSP(S) URL
_PROTOCOLS = {"rtsp": "rtsp,rtp,srtp,udp,tcp", "rtsps": "rtsps,rtsp,rtp,srtp,udp,tcp,tls"}
ALLOWED_OPTIONS: dict[str, re.Pattern[str]] = {
    "rtsp_transport": re.compile(r"^(tcp|udp|udp_multicast)$"),
    "rtsp_flags": re.compile(r"^(prefer_tcp|filter_src)$"),
    "analyzeduration": re.compile(r"^\d{1,9}$"),
    "probesize": re.compile(r"^\d{2,9}$"),
    "fflags": re.compile(r"^[+-]?(nobuffer|discardcorrupt|genpts)([+-](nobuffer|discardcorrupt|genpts))*$"),
    "buffer_size": re.compile(r"^\d{1,9}$"),
    "max_delay": re.compile(r"^\d{1,9}$"),
    "reorder_queue_size": re.compile(r"^\d{1,5}$"),
    "stimeout": re.compile(r"^\d{1,11}$"),
    "timeout": re.compile(r"^\d{1,11}$"),
    "user_agent": re.compile(r"^[\x20-\x7e]{0,128}$"),
}
_SECRET_KEYS = r"(?:password|passwd|pwd|token|access_token|secret|key|auth|signature|sig|apikey|api_key)"
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
_QUERY_SECRET = re.compile(r"([?&;]" + _SECRET_KEYS + r"=)[^&#\s'\"]*", re.IGNORECASE)
_PAIR_SECRET = re.compile(r"(\b" + _SECRET_KEYS + r"\s*[=:]\s*)[^\s,;'\"&]+", re.IGNORECASE)


class SourceRefused(ValueError):
    """The URL or an option is not allowed (-> INVALID_ARGUMENT)."""


def redact(text: str) -> str:
    """`text` without credentials: URL user-info, secret query values and `password=...` pairs."""
    text = _USERINFO.sub(r"\1***@", text)
    text = _QUERY_SECRET.sub(r"\1***", text)
    return _PAIR_SECRET.sub(r"\1***", text)


def redact_url(url: str) -> str:
    """A URL for display (TrackInfo.source, logs, metrics): no user-info, no secret query values."""
    return _QUERY_SECRET.sub(r"\1***", _USERINFO.sub(r"\1", url))


def check_source(url: str, options: dict[str, str], schemes: tuple[str, ...] = DEFAULT_SCHEMES,
                 max_url_chars: int = 2048) -> dict[str, str]:
    """Refuse what the server must not open; -> the FFmpeg options the caller may set (validated)."""
    if len(url) > max_url_chars:
        raise SourceRefused(f"source URL is {len(url)} characters; the limit is {max_url_chars}")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise SourceRefused("source URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise SourceRefused(f"source URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise SourceRefused(f"source URL scheme {scheme + '://' if scheme else '(none)'} is not allowed; "
                            f"this server opens only {', '.join(s + '://' for s in schemes)} (--source-schemes)")
    if not host:
        raise SourceRefused(f"source URL {redact_url(url)!r} has no host")
    out: dict[str, str] = {}
    for key, value in options.items():
        pattern = ALLOWED_OPTIONS.get(key)
        if pattern is None:
            raise SourceRefused(f"source option {key[:64]!r} is not allowed; allowed: "
                                f"{', '.join(sorted(ALLOWED_OPTIONS))}")
        if not pattern.match(value):
            raise SourceRefused(f"source option {key}={value[:64]!r} has a value this server does not accept")
        out[key] = value
    return out


def protocol_whitelist(url: str) -> str:
    """FFmpeg's `protocol_whitelist` for this URL's scheme (server-side, never from the caller)."""
    scheme = urlsplit(url).scheme.lower()
    return _PROTOCOLS.get(scheme, scheme)
