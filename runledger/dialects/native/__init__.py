"""Runledger's own API under /api/runledger/v1."""
