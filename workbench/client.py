"""Short entry point: ``from workbench.client import Client``.

The protocol client lives in `workbench.notebook.client`."""

from workbench.notebook.client import AsyncClient, Client, Recording, ServerError

__all__ = ["AsyncClient", "Client", "Recording", "ServerError"]
