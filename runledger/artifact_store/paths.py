"""Artifact paths as clients send them, checked before any byte store sees them.

A path arrives percent-decoded once by the HTTP server. It must name something inside the
artifact root after every decoding a later layer might still apply, so it is refused (never
"repaired") when any of these hold:

- it is absolute (`/etc/passwd`), or has an empty, `.` or `..` segment (`a//b`, `a/../b`);
- it holds a backslash (a separator on Windows shares), NUL or another control or format
  character (bidirectional overrides, zero-width joiners);
- decoding it once or twice more (`%2e%2e`, `%252e%252e`, `%2f`) would change its segments;
- Unicode compatibility folding (NFKC) would turn a segment into `.`/`..` or add a separator
  (the two-dot leader `‥`, full-width `．．` and `／`).

What passes is a plain POSIX relative path whose segments are stored as given.
"""

from __future__ import annotations

import unicodedata
import urllib.parse

MAX_PATH_CHARS = 1024
MAX_SEGMENT_BYTES = 255


class UnsafePath(ValueError):
    """The path could leave the folder it is meant for; the message says why."""


def _segments_ok(path: str) -> None:
    for seg in path.split("/"):
        if seg in ("", ".", ".."):
            raise UnsafePath("empty, '.' and '..' segments are not allowed")
        if len(seg.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise UnsafePath(f"a path segment is longer than {MAX_SEGMENT_BYTES} bytes")
        folded = unicodedata.normalize("NFKC", seg)
        if folded in (".", "..") or "/" in folded or "\\" in folded:
            raise UnsafePath("the path holds characters that fold into '.', '..' or a separator")


def check_relative_path(path: str, *, allow_empty: bool = False) -> str:
    """`path` if it is a safe relative artifact path (see the module docstring); else UnsafePath.
    `allow_empty`: the empty path (the folder itself) is accepted, as for listings."""
    if path == "":
        if allow_empty:
            return path
        raise UnsafePath("the path is empty")
    if len(path) > MAX_PATH_CHARS:
        raise UnsafePath(f"the path is longer than {MAX_PATH_CHARS} characters")
    if path.startswith("/"):
        raise UnsafePath("absolute paths are not allowed")
    for ch in path:
        if ch == "\\":
            raise UnsafePath("backslashes are not allowed")
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise UnsafePath("control, format and unassigned characters are not allowed")
    _segments_ok(path)
    # A later layer (a proxy, a storage SDK) might decode again: the result must be the same path.
    decoded = path
    for _ in range(2):
        try:
            again = urllib.parse.unquote(decoded, errors="strict") if "%" in decoded else decoded
        except UnicodeDecodeError:
            raise UnsafePath("the path holds a percent-encoding that is not UTF-8") from None
        if again != decoded:
            if again.startswith("/") or "\\" in again or "\x00" in again:
                raise UnsafePath("the path decodes to an absolute path or a backslash")
            _segments_ok(again)
            decoded = again
    return path


def join(*parts: str) -> str:
    """Join checked relative paths (empty parts are skipped)."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))
