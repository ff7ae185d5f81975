"""Fixtures for the emulated apiserver's own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from agentrun_devcluster.testing import ClusterThread
from kubernetes_asyncio import client, config


@pytest.fixture
def emulated_cluster() -> Iterator[ClusterThread]:
    """A fresh emulated apiserver (CRDs installed) in a background thread."""
    with ClusterThread() as cluster:
        yield cluster


@pytest.fixture
async def kube(emulated_cluster: ClusterThread) -> AsyncIterator[client.ApiClient]:
    """A kubernetes_asyncio ApiClient loaded from the cluster's kubeconfig."""
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(emulated_cluster.kubeconfig), client_configuration=configuration
    )
    async with client.ApiClient(configuration) as api:
        yield api
