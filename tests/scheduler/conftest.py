"""Fixtures shared by the scheduler's Kubernetes tests: the API server double and clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.scheduler.fake_apiserver import FakeApiServer


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    yield server
    server.close()


@pytest.fixture
def api(fake: FakeApiServer) -> tuple[Any, Any]:
    configuration = client.Configuration()
    configuration.host = fake.url
    api_client = client.ApiClient(configuration)
    return client.CoreV1Api(api_client), client.CoordinationV1Api(api_client)
