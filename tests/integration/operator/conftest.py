"""Fixtures of the operator integration tests (see operator_harness)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

# The harness module sits beside the tests (pytest runs with --import-mode=importlib).
sys.path.insert(0, str(Path(__file__).parent))

import operator_harness as h
import pytest
from agentrun_devcluster.system import ControlledCluster, SyncKube


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = h.new_workdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def op_cluster() -> Iterator[ControlledCluster]:
    with ControlledCluster() as c:
        yield c


@pytest.fixture
def k(op_cluster: ControlledCluster) -> Iterator[SyncKube]:
    client = SyncKube(op_cluster.base_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def start_operator(
    op_cluster: ControlledCluster, workdir: Path
) -> Iterator[Callable[..., h.OperatorProcess]]:
    started: list[h.OperatorProcess] = []

    def start(tag: str = "0", **env: str) -> h.OperatorProcess:
        proc = h.OperatorProcess(op_cluster, workdir, env, tag=tag)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[ControlledCluster, SyncKube, h.OperatorProcess]]:
    """One cluster (with the credentials Secret) and one operator with default test settings,
    shared by a module's tests; each test uses its own run names (faults select by run)."""
    path = h.new_workdir()
    with ControlledCluster() as cluster:
        client = SyncKube(cluster.base_url)
        h.create_credentials(client)
        op = h.OperatorProcess(cluster, path, {}, tag="shared")
        try:
            yield cluster, client, op
        finally:
            op.stop()
            client.close()
    shutil.rmtree(path, ignore_errors=True)
