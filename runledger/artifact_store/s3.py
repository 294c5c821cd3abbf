"""Artifacts in an S3-compatible bucket (AWS S3, MinIO, Ceph, ...) through boto3.

Set RUNLEDGER_ARTIFACT_STORE=s3://bucket/prefix; the endpoint and credentials come from
RUNLEDGER_S3_ENDPOINT_URL and boto3's usual sources (AWS_ACCESS_KEY_ID, ... or a profile).
Uploads are staged on the server's disk, then put as one object (boto3 switches to S3's own
multipart upload for big files), so a failed upload never leaves a partial object.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any, Iterator

from runledger.artifact_store.base import CHUNK, Entry, NotFound, Staged


class S3Store:
    def __init__(self, url: str, staging: Path, endpoint_url: str | None = None) -> None:
        import boto3  # only needed when this store is chosen
        from boto3.s3.transfer import TransferConfig

        parsed = urllib.parse.urlsplit(url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url)
        self.transfer = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20)
        self.staging = staging
        self.description = f"bucket {url}" + (f" at {endpoint_url}" if endpoint_url else "")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _folder(self, key: str) -> str:
        full = self._key(key)
        return f"{full}/" if full else ""

    def begin(self, key: str) -> Staged:
        def publish(tmp: Path) -> None:
            self.client.upload_file(str(tmp), self.bucket, self._key(key), Config=self.transfer)
        return Staged(self.staging, publish)

    def size(self, key: str) -> int:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise NotFound(key) from None
            raise
        return int(head["ContentLength"])

    def read(self, key: str, start: int = 0) -> Iterator[bytes]:
        try:
            extra = {"Range": f"bytes={start}-"} if start else {}
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)["Body"]
        except self.client.exceptions.NoSuchKey:
            raise NotFound(key) from None
        return body.iter_chunks(CHUNK)  # type: ignore[no-any-return]

    def _pages(self, prefix: str, delimiter: str | None) -> Iterator[dict[str, Any]]:
        kwargs = {"Bucket": self.bucket, "Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {})}
        yield from self.client.get_paginator("list_objects_v2").paginate(**kwargs)

    def list(self, key: str) -> list[Entry]:
        prefix = self._folder(key)
        out: dict[str, Entry] = {}
        for page in self._pages(prefix, "/"):
            for p in page.get("CommonPrefixes", []):
                name = p["Prefix"][len(prefix):].rstrip("/")
                out[name] = Entry(name, True, None)
            for o in page.get("Contents", []):
                name = o["Key"][len(prefix):]
                if name:
                    out[name] = Entry(name, False, int(o["Size"]))
        return [out[k] for k in sorted(out)]

    def files(self, key: str) -> list[tuple[str, int]]:
        found = []
        try:
            found.append((key, self.size(key)))
        except NotFound:
            pass
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in self._pages(self._folder(key), None):
            found.extend((o["Key"][strip:], int(o["Size"])) for o in page.get("Contents", []))
        return sorted(found)

    def delete(self, key: str) -> None:
        keys = [self._key(k) for k, _ in self.files(key)]
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket,
                                       Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
