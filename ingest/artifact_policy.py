"""Where a caller may point an experiment's artifacts: under the server's artifact root, or an
`mlflow-artifacts:` URI (resolved by an artifact server, which confines it itself).

A location the caller picks is later handed to every client that logs to the experiment, and
clients write there themselves: `file:///etc`, `../..` or a UNC share would make them write
outside the store. So besides MLflow's own checks (limits.check_artifact_location) a location
must stay inside the root, after decoding, with no path tricks.
"""

from __future__ import annotations

import os
import posixpath
import urllib.parse
from pathlib import Path

from runledger.ingest.limits import invalid_value

MLFLOW_ARTIFACTS_SCHEME = "mlflow-artifacts"
_LOCAL_NETLOCS = ("", "localhost")


def _split(uri: str) -> tuple[str, str, list[str]]:
    """(scheme, host, path segments) of `uri`; a bare absolute path counts as a file: URI."""
    parsed = urllib.parse.urlsplit(uri)
    scheme = parsed.scheme.lower()
    if scheme == "" and uri.startswith("/") and not uri.startswith("//"):
        scheme = "file"
    netloc = parsed.netloc.lower()
    if scheme == "file" and netloc in _LOCAL_NETLOCS:
        netloc = ""
    segments = [s for s in parsed.path.split("/") if s]
    return scheme, netloc, segments


def _why_unsafe(location: str) -> str | None:
    if "\\" in location or location.startswith("//") or "\x00" in location:
        return "Backslashes, UNC paths and NUL are not allowed."
    decoded = urllib.parse.unquote(urllib.parse.urlsplit(location).path)
    if "\\" in decoded or "\x00" in decoded or decoded.startswith("//"):
        return "Backslashes, UNC paths and NUL are not allowed."
    if any(seg in (".", "..") for seg in decoded.split("/")):
        return "The path must not contain '.' or '..' segments."
    if decoded and posixpath.normpath(decoded) != decoded.rstrip("/") and decoded != "/":
        return "The path must be in normal form (no empty or relative segments)."
    return None


def resolve_relative_location(location: str, cwd: Path | None = None) -> str:
    """A scheme-less relative location made absolute as MLflow's server does it: a file: URI
    under the server's working directory (which the policy below then judges like any other)."""
    if urllib.parse.urlsplit(location).scheme or location.startswith("/") or "\\" in location:
        return location
    return Path(os.path.normpath((cwd or Path.cwd()) / location)).as_uri()


def check_artifact_location_policy(location: str, artifact_root: str) -> str:
    """`location` if it is an `mlflow-artifacts:` URI or lies under `artifact_root`; else a 400."""
    why = _why_unsafe(location)
    if why is not None:
        raise invalid_value("artifact_location", location, why)
    scheme, netloc, segments = _split(location)
    if scheme == MLFLOW_ARTIFACTS_SCHEME:
        path = urllib.parse.urlsplit(location).path
        if path and not path.startswith("/"):
            raise invalid_value("artifact_location", location,
                                "An mlflow-artifacts: URI names a path from the root: mlflow-artifacts:/<path>.")
        return location
    root_scheme, root_netloc, root_segments = _split(artifact_root)
    if (scheme, netloc) != (root_scheme, root_netloc) or segments[:len(root_segments)] != root_segments:
        raise invalid_value("artifact_location", location,
                            f"It must be under the server's artifact root {artifact_root} "
                            "or an mlflow-artifacts: URI.")
    return location
