"""MLflow 3.x metrics linked to a logged model: `model_id`, `dataset_name`, `dataset_digest`
on a runs/log-metric request or on each metric of runs/log-batch.

They travel as three extra columns of the MetricsLogged payload (see ingest.contract.events), present
only when some point names a model, so ordinary metric events keep their shape.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from runledger.ingest.errors import InvalidParameterValue
from runledger.dialects.request import Fields
from runledger.dialects import services
from runledger.ingest.contract import entities


def model_metric_columns(items: list[Fields], request: Request) -> dict[str, list[Any]]:
    """The extra columns, or {} when no point names a model. A model that does not exist is a
    400, as MLflow's foreign key makes it (a deleted model is still there)."""
    model_ids = [f.str("model_id") or None for f in items]
    if not any(model_ids):
        return {}
    catalog = services.models(request)
    for model_id in dict.fromkeys(m for m in model_ids if m):
        if catalog.logged_model(model_id) is None:
            raise InvalidParameterValue(entities.model_not_found(model_id))
    return {
        "model_ids": model_ids,
        "dataset_names": [f.str("dataset_name") or None for f in items],
        "dataset_digests": [f.str("dataset_digest") or None for f in items],
    }
