"""One room per API dialect. Each parses its wire shape, calls the writer (runledger.ingest) or
the reader (runledger.query), and renders its wire shape; errors are mapped once per dialect.

- `mlflow/`: MLflow's tracking REST API (`/api/2.0/mlflow`, `/ajax-api/2.0/mlflow`).
- `native/`: Runledger's own API (`/api/runledger/v1`): streaming ingest, operational reads.
"""
