"""A hyper-parameter study as a caller may see it, shared by the rooms that serve studies (PAI's
HPO view and the native one): the study folded by query.hpo, and absent when the caller may not
read its experiment (the listing rule of docs/auth.md: unreadable reads as absent, not as a 403
naming it)."""

from __future__ import annotations

from starlette.requests import Request

from runledger.auth.access import access
from runledger.dialects import services
from runledger.ingest.errors import ResourceDoesNotExist
from runledger.query import hpo


def readable_study(request: Request, study_id: str, not_found: str) -> hpo.Study:
    reader = services.reader(request)
    with reader.cursor() as cur:
        found = hpo.load(cur, study_id, reader.latest_table)
    if found is None or not access(request).read_scope().allows(found.experiment_id):
        raise ResourceDoesNotExist(not_found)
    return found
