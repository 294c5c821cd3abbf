"""A hyper-parameter study as a caller may see it, shared by the rooms that serve studies (PAI's
HPO view and the native one): the study folded by query.hpo, and absent when the caller may not
read its experiment (the listing rule of docs/auth.md: unreadable reads as absent, not as a 403
naming it)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

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


def study_refused(param: str) -> Callable[[Request, Mapping[str, Any]], bool]:
    """readable_study's check for the auth rule (runledger.auth.rules.Rule.refused_now): True when
    the study named by path parameter `param` exists and the caller may not read its experiment."""
    def refused(request: Request, params: Mapping[str, Any]) -> bool:
        study_id = params.get(param)
        if not isinstance(study_id, str) or not study_id:
            return False
        reader = services.reader(request)
        with reader.cursor() as cur:
            found = hpo.load(cur, study_id, reader.latest_table)
        return found is not None and not access(request).read_scope().allows(found.experiment_id)
    return refused
