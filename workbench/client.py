"""Short entry point: ``from workbench.client import Client``.

The protocol client lives in `workbench.notebook.client`."""

from workbench.notebook.client import AsyncClient, Client, RecordingReport, ServerError

__all__ = ["AsyncClient", "Client", "RecordingReport", "ServerError"]
