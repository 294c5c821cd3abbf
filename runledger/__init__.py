"""Runledger, the server distribution (`runledger-server`): ingest, projector, query and the
API dialects. The client (`runledger.client`) is a distribution of its own (`runledger-client`)
that installs into this same namespace; extend_path lets a client installed elsewhere on
sys.path (an editable install, another site directory) join it."""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
