"""The emulated apiserver's request log, over HTTP: who asked for what, and the owner-reference
admission check (OwnerReferencesPermissionEnforcement) a blockOwnerDeletion write implies."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from agentrun_devcluster.apiserver.audit import ADMISSION, REQUEST, RequestLog
from agentrun_devcluster.testing import ClusterThread

RUNS = "/apis/agentrun.dev/v1alpha1/namespaces/default/agentruns"
SECRETS = "/api/v1/namespaces/default/secrets"


@pytest.fixture
def logged() -> Iterator[tuple[ClusterThread, RequestLog]]:
    cluster = ClusterThread()
    log = RequestLog(cluster.server.state.registry)
    cluster.server.add_middleware(log.middleware)
    with cluster:
        yield cluster, log


def test_requests_are_attributed_and_owner_references_imply_finalizers_update(
    logged: tuple[ClusterThread, RequestLog],
) -> None:
    cluster, log = logged
    with httpx.Client(
        base_url=cluster.base_url, headers={"Authorization": "Bearer alice"}
    ) as alice:
        run = alice.post(
            RUNS,
            json={
                "apiVersion": "agentrun.dev/v1alpha1",
                "kind": "AgentRun",
                "metadata": {"name": "r"},
                "spec": {"prompt": "p"},
            },
        )
        assert run.status_code == 201, run.text
        uid = run.json()["metadata"]["uid"]
        owned = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "owned",
                "ownerReferences": [
                    {
                        "apiVersion": "agentrun.dev/v1alpha1",
                        "kind": "AgentRun",
                        "name": "r",
                        "uid": uid,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
        }
        assert alice.post(SECRETS, json=owned).status_code == 201
        # Without blockOwnerDeletion, or refused: no admission check recorded.
        plain = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plain"}}
        assert alice.post(SECRETS, json=plain).status_code == 201
        assert alice.post(SECRETS, json=owned).status_code == 409
    with httpx.Client(base_url=cluster.base_url, headers={"Authorization": "Bearer bob"}) as bob:
        assert bob.get(f"{RUNS}/r").status_code == 200
        assert bob.get("/version").status_code == 200

    alice_entries = [(e.verb, e.rbac_resource, e.origin) for e in log.of_user("alice")]
    assert alice_entries == [
        ("create", "agentruns", REQUEST),
        ("create", "secrets", REQUEST),
        ("update", "agentruns/finalizers", ADMISSION),
        ("create", "secrets", REQUEST),
        ("create", "secrets", REQUEST),
    ]
    (check,) = [e for e in log.of_user("alice") if e.origin == ADMISSION]
    assert (check.group, check.namespace, check.name) == ("agentrun.dev", "default", "r")
    assert [(e.verb, e.rbac_resource, e.name) for e in log.of_user("bob")] == [
        ("get", "agentruns", "r")
    ]
