"""Build a kubernetes_asyncio ApiClient from a kubeconfig or the in-cluster service account."""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config


async def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient for ``kubeconfig`` (or $KUBECONFIG), else the in-cluster service account.

    The caller owns the client and must ``await api.close()``.
    """
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=path, client_configuration=configuration)
    else:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration=configuration)
