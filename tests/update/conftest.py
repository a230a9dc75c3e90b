"""An operator's site on a real HTTPS server, for the update tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.update.fixtures import Site
from tests.update.servers import CA, StaticServer, make_ca


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return make_ca(tmp_path / "ca")


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path / "site", tmp_path / "keys")


@pytest.fixture
def server(site: Site, ca: CA) -> Iterator[StaticServer]:
    with StaticServer(site.root, https=ca.server_cert()) as running:
        yield running
