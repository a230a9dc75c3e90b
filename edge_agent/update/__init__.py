"""Signed model updates, in the manner of The Update Framework's ngclient:
verification of bytes (manifest.py) kept apart from I/O (fetch.py and transfer.py
over HTTP, local.py over files), a release read the same way by the device and the
operator's CLI (release.py), installation (store.py), probation (probation.py),
and the orchestration that ties them to the running pipelines (manager.py),
which sees the network and the pipelines only through protocols.py."""
