"""For notebook users: the protocol `client`, a `local_server` to talk to, ipywidgets
`widgets` and `analysis` (loading sessions, plots, speaker statistics)."""
