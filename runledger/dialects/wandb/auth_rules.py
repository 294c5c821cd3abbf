"""What the W&B room's one route needs (runledger.auth.rules; docs/auth.md). A GraphQL document
names its projects and runs inside the query, so the handler checks for itself: projects the
caller cannot read answer as absent (null), writes need EDIT on the run's experiment."""

from __future__ import annotations

from runledger.auth import rules
from runledger.auth.rules import READ, Rule

RULES: dict[str, Rule] = {
    "POST /graphql": Rule(READ, rules.IN_HANDLER),
}
