"""Artifact bytes: where they are kept (a folder under the data folder by default, or an
S3-compatible bucket), apart from the event log, which only records that they were written
or deleted (docs/artifacts.md)."""

from __future__ import annotations

from pathlib import Path

from runledger.artifact_store.base import ArtifactStore, Entry, MultipartStaging, NotFound, Staged
from runledger.artifact_store.local import STAGING, LocalStore
from runledger.artifact_store.paths import UnsafePath, check_relative_path

__all__ = ["ArtifactStore", "Entry", "MultipartStaging", "NotFound", "Staged", "UnsafePath", "LocalStore",
           "check_relative_path", "open_store"]


def open_store(location: str, data_dir: Path, s3_endpoint_url: str | None = None) -> tuple[ArtifactStore, MultipartStaging]:
    """The byte store at `location` (a folder path or s3://bucket/prefix) and the staging area
    for multipart uploads (always on local disk, under the data folder)."""
    staging = data_dir / "artifact-uploads"
    if location.startswith("s3://"):
        from runledger.artifact_store.s3 import S3Store

        return S3Store(location, staging / "objects", s3_endpoint_url), MultipartStaging(staging / "multipart")
    store = LocalStore(Path(location))
    return store, MultipartStaging(store.root / STAGING / "multipart")
