"""The request log's attributes: the verb, resource and scope Kubernetes' authorizer would see."""

from __future__ import annotations

import pytest
from agentrun_devcluster.apiserver.audit import RequestAttributes, request_attributes

RUNS = "/apis/agentrun.dev/v1alpha1/namespaces/ns/agentruns"


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/ns/pods", {}, ("list", "", "pods", "", "ns", "")),
        (
            "GET",
            "/api/v1/namespaces/ns/pods",
            {"watch": "true"},
            ("watch", "", "pods", "", "ns", ""),
        ),
        ("GET", "/api/v1/namespaces/ns/pods/p/log", {}, ("get", "", "pods", "log", "ns", "p")),
        ("POST", RUNS, {}, ("create", "agentrun.dev", "agentruns", "", "ns", "")),
        ("GET", f"{RUNS}/r", {}, ("get", "agentrun.dev", "agentruns", "", "ns", "r")),
        (
            "PATCH",
            f"{RUNS}/r/status",
            {},
            ("patch", "agentrun.dev", "agentruns", "status", "ns", "r"),
        ),
        ("DELETE", f"{RUNS}/r", {}, ("delete", "agentrun.dev", "agentruns", "", "ns", "r")),
        ("DELETE", RUNS, {}, ("deletecollection", "agentrun.dev", "agentruns", "", "ns", "")),
        (
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l",
            {},
            ("update", "coordination.k8s.io", "leases", "", "ns", "l"),
        ),
        # A namespace is in its own scope; the collection is cluster-scoped.
        ("GET", "/api/v1/namespaces/ns", {}, ("get", "", "namespaces", "", "ns", "ns")),
        (
            "PUT",
            "/api/v1/namespaces/ns/finalize",
            {},
            ("update", "", "namespaces", "finalize", "ns", "ns"),
        ),
        ("GET", "/api/v1/namespaces", {"watch": "1"}, ("watch", "", "namespaces", "", None, "")),
        (
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            {},
            ("list", "apiextensions.k8s.io", "customresourcedefinitions", "", None, ""),
        ),
        # All namespaces at once: a cluster-scoped request.
        ("GET", "/apis/batch/v1/jobs", {}, ("list", "batch", "jobs", "", None, "")),
    ],
)
def test_resource_requests(
    method: str, path: str, query: dict[str, str], expected: tuple[object, ...]
) -> None:
    found = request_attributes("u", method, path, query)
    assert found is not None
    assert (
        found.verb,
        found.group,
        found.resource,
        found.subresource,
        found.namespace,
        found.name,
    ) == expected
    assert found.user == "u"


@pytest.mark.parametrize(
    "path", ["/version", "/api", "/api/v1", "/apis", "/apis/batch/v1", "/livez"]
)
def test_discovery_and_other_paths_are_not_resource_requests(path: str) -> None:
    assert request_attributes("u", "GET", path, {}) is None


def test_rbac_resource_names_the_subresource() -> None:
    entry = RequestAttributes(
        user="u", verb="update", group="g", resource="r", subresource="finalizers"
    )
    assert entry.rbac_resource == "r/finalizers"
    assert (
        RequestAttributes(user="u", verb="get", group="", resource="pods").rbac_resource == "pods"
    )
