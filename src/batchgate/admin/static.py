"""The console's stylesheet, script and icon, read from the package once and served with a content
hash in their URLs, so a browser keeps them until they change."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from batchgate.admin.http import Response

TYPES = {
    "css": b"text/css; charset=utf-8",
    "js": b"text/javascript; charset=utf-8",
    "svg": b"image/svg+xml",
}
PREFIX = "/static/"


@functools.cache
def files() -> dict[str, bytes]:
    folder = resources.files("batchgate.admin") / "static"
    return {
        item.name: item.read_bytes()
        for item in folder.iterdir()
        if item.is_file() and item.name.rpartition(".")[2] in TYPES
    }


@functools.cache
def digest(name: str) -> str:
    return hashlib.sha256(files()[name]).hexdigest()[:12]


def url(name: str) -> str:
    return f"{PREFIX}{name}?v={digest(name)}"


def serve(path: str, version: str) -> Response | None:
    """The asset at `path`, or None when there is none."""
    name = path.removeprefix(PREFIX)
    content = files().get(name)
    if content is None:
        return None
    cache = b"public, max-age=31536000, immutable" if version == digest(name) else b"no-cache"
    return Response(200, content, TYPES[name.rpartition(".")[2]], [(b"cache-control", cache)])
