"""Suite-wide fixtures for integration tests on the emulated cluster.

- ``cluster``: emulated apiserver + fake Job controller + kubelet + faults (function scope);
  ``cluster_module`` is the same, shared by a module.
- ``kube``: a blocking JSON client (:class:`agentrun_devcluster.system.SyncKube`) on ``cluster``.
- ``system``: the whole `agentrun dev` stack with the tiny runner (operator and API processes;
  function scope), with the LLM credentials Secret holding a dummy key (build a
  ``DevSystem(llm_credentials={})`` for a cluster without it); ``system_module`` shared by a
  module. Fails with a clear message if the API or the operator package is missing.
- Faults: ``cluster.faults`` / ``system.faults`` (in-process), or ``POST /_emulator/faults``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agentrun_devcluster.system import ControlledCluster, DevSystem, SyncKube


@pytest.fixture
def cluster() -> Iterator[ControlledCluster]:
    with ControlledCluster() as c:
        yield c


@pytest.fixture(scope="module")
def cluster_module() -> Iterator[ControlledCluster]:
    with ControlledCluster() as c:
        yield c


@pytest.fixture
def kube(cluster: ControlledCluster) -> Iterator[SyncKube]:
    client = SyncKube(cluster.base_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def system() -> Iterator[DevSystem]:
    with DevSystem() as s:
        yield s


@pytest.fixture(scope="module")
def system_module() -> Iterator[DevSystem]:
    with DevSystem() as s:
        yield s
