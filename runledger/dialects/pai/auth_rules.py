"""What the PAI HPO routes need: READ on the experiment holding the study, checked in the
handler (the id is a parent run's or an experiment's; runledger.auth.rules, docs/auth.md)."""

from __future__ import annotations

from runledger.auth import rules
from runledger.auth.rules import EXPERIMENT, READ, Rule
from runledger.dialects.studies import study_refused

_READ = Rule(READ, rules.in_handler("experiment_id", EXPERIMENT), refused_now=study_refused("experiment_id"))

RULES: dict[str, Rule] = {
    "GET /experiment/{experiment_id}": _READ,
    "GET /experiment/{experiment_id}/trials": _READ,
    "GET /experiment/{experiment_id}/trial/{trial_id}": _READ,
}
