"""Runledger's own API answers errors in MLflow's shape and statuses, so that one client (ours,
or a script written against MLflow) handles both prefixes the same way."""

from __future__ import annotations

from runledger.dialects.mlflow.errors import render

__all__ = ["render"]
