"""What the W&B room's one route needs (runledger.auth.rules; docs/auth.md). A GraphQL document
names its projects and runs inside the query, so the handler checks for itself: projects the
caller cannot read answer as absent (null), writes need EDIT on the run's experiment.

A history export is fetched by W&B's Go helper with a bare HTTP client, as from a bucket's
presigned URL: no credentials reach the gate. The URL's signature is the credential; the
handler verifies it and that the user it was issued to still has READ on the run's experiment
(exports.py), and answers 404 otherwise."""

from __future__ import annotations

from runledger.auth import rules
from runledger.auth.rules import PUBLIC_RULE, READ, Rule

RULES: dict[str, Rule] = {
    "POST /graphql": Rule(READ, rules.IN_HANDLER),
    "GET /wandb/history-exports/{run_id}/{version}/{part}.parquet": PUBLIC_RULE,
}
