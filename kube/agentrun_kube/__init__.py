"""Kubernetes client set-up and typed errors, shared by the API and the operator.

The client is kubernetes_asyncio: maintained alongside the official client, fully async (aiohttp,
the same HTTP stack kopf uses, so the operator carries one), and it covers custom objects, JSON and
merge patches and watches without code of our own.
"""
