"""What every dialect room works with, filled in once by the composition root (runledger.app):
the writer (requests -> events), the reader (the read model), the logged-model catalog, the
streaming backlog and the settings. Routes get them through these typed accessors, so the
import graph shows who uses what; each also works as a FastAPI dependency (`Depends(reader)`)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from runledger.artifact_store import ArtifactStore, MultipartStaging
from runledger.ingest.backlog import AppendBacklog
from runledger.ingest.catalog import ModelCatalog
from runledger.ingest.writer import Writer
from runledger.query.audit_service import AuditService
from runledger.query.read_service import ReadService
from runledger.query.sql.engine import SqlEngine
from runledger.settings import Settings


@dataclass(frozen=True, slots=True)
class Services:
    writer: Writer
    reader: ReadService
    models: ModelCatalog
    backlog: AppendBacklog
    settings: Settings
    sql: SqlEngine | None = None
    audit: AuditService | None = None   # the trail, as-of reads, diffs, tails (issue 14)
    artifacts: ArtifactStore | None = None      # the bytes of served artifacts (docs/artifacts.md)
    multipart: MultipartStaging | None = None   # parts of multipart uploads in progress


def services(conn: HTTPConnection) -> Services:
    found: Services = conn.app.state.services
    return found


def writer(conn: HTTPConnection) -> Writer:
    return services(conn).writer


def reader(conn: HTTPConnection) -> ReadService:
    return services(conn).reader


def models(conn: HTTPConnection) -> ModelCatalog:
    return services(conn).models


def audit(conn: HTTPConnection) -> AuditService:
    found = services(conn).audit
    assert found is not None, "the composition root builds the audit service"
    return found


def backlog(conn: HTTPConnection) -> AppendBacklog:
    return services(conn).backlog


def settings(conn: HTTPConnection) -> Settings:
    """Available before start-up finishes (the app is built with them)."""
    found: Settings = conn.app.state.settings
    return found
