"""Files served from the package: compressed once, cacheable, under a strict
Content-Security-Policy.

Every page keyhouse serves to a browser runs only scripts from keyhouse itself (no inline
script, no CDN), so a machine without internet gets a working page and an injected ``<script>``
does not run. Styles, fonts and images may also be ``data:`` URIs: GraphiQL's stylesheet embeds
its fonts and icons that way, and neither can run code.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from starlette.requests import Request
from starlette.responses import Response

PACKAGE = Path(__file__).resolve().parent
STATIC = PACKAGE / "static"
QUERIES = PACKAGE / "queries"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Vendored files carry their version in their path, so a browser may keep them for a year; the
# dashboard's own files change with keyhouse and are revalidated (a 304 when unchanged).
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# Below this, gzip's header costs more than it saves.
COMPRESS_FROM_BYTES = 512

mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("application/graphql", ".graphql")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    media_type: str
    etag: str
    cache_control: str

    @classmethod
    def load(cls, path: Path, *, immutable: bool) -> Asset:
        body = path.read_bytes()
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if media_type.startswith("text/") or media_type.endswith(("javascript", "graphql")):
            media_type += "; charset=utf-8"
        gzipped = gzip.compress(body, 9, mtime=0) if len(body) >= COMPRESS_FROM_BYTES else None
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return cls(body, gzipped, media_type, etag, IMMUTABLE if immutable else REVALIDATE)

    def response(self, request: Request) -> Response:
        headers = {**SECURITY_HEADERS, "ETag": self.etag, "Cache-Control": self.cache_control}
        headers["Vary"] = "Accept-Encoding"
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        body = self.body
        if self.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
            body = self.gzipped
            headers["Content-Encoding"] = "gzip"
        return Response(body, headers=headers, media_type=self.media_type)


class AssetDirectory:
    """The files under one directory, read and compressed on first request and kept: they are
    part of the installed package and do not change while it runs."""

    def __init__(self, root: Path, *, immutable_under: str | None = None) -> None:
        self.root = root
        self.immutable_under = immutable_under
        self._loaded: dict[str, Asset] = {}

    def get(self, relative: str) -> Asset | None:
        parts = PurePosixPath(relative).parts
        # Only plain names below the root: no "..", no absolute path, no hidden file. And only
        # a path in its one spelling ("a/./b", "a//b" and "a/b/" are refused): each spelling
        # would otherwise be read, compressed and kept again, so probing could grow the cache.
        if not parts or any(part in ("..", "/") or part.startswith(".") for part in parts):
            return None
        if "/".join(parts) != relative:
            return None
        asset = self._loaded.get(relative)
        if asset is None:
            asset = self._load(parts)
            # Only files that exist are kept: probing for missing names cannot grow the cache.
            if asset is not None:
                self._loaded[relative] = asset
        return asset

    def _load(self, parts: tuple[str, ...]) -> Asset | None:
        path = self.root.joinpath(*parts)
        if not path.is_file():
            return None
        immutable = self.immutable_under is not None and parts[0] == self.immutable_under
        return Asset.load(path, immutable=immutable)


def not_found() -> Response:
    return Response("Not found", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)
