"""Signed model updates, in the manner of The Update Framework's ngclient:
verification of bytes (manifest.py) kept apart from I/O (fetch.py), installation
(store.py) and the orchestration that ties them to the running pipelines
(manager.py)."""
