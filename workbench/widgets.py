"""Short entry point: ``from workbench.widgets import SessionPanel``.

The panels live in `workbench.notebook.widgets`."""

from workbench.notebook.widgets import SessionPanel

__all__ = ["SessionPanel"]
