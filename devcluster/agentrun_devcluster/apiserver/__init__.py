"""An in-memory Kubernetes API server over real HTTP, for CI and laptops (``agentrun dev``).

kopf, kubernetes_asyncio and kubectl treat it as a real one for everything this project uses:
discovery, CRUD, list/watch with selectors, patches, /status isolation, finalizers, garbage
collection, CRD schemas, server-side printing and pod logs. See ``server.EmulatedAPIServer``.
"""

from .logs import PodLogProvider
from .server import EmulatedAPIServer

__all__ = ["EmulatedAPIServer", "PodLogProvider"]
