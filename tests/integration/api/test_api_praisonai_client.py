"""PraisonAI's own jobs client (praisonai 4.7.19) works unchanged against the API (auth off).

- ``praisonai_code.cli.features.jobs``: the ``praisonai run submit|status|result|cancel|list``
  client (``JobsHandler`` and its argparse front end ``handle_run_command``). In 4.7.19 the
  ``praisonai run`` console entry point routes ``run <word>`` to the Typer run command first, so
  the front end is driven here exactly as the legacy dispatcher calls it.
- ``praisonai.recipe.operations.JobHandle``: the SDK's poll/result/cancel handle.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from agentrun_devcluster.testing import ClusterThread

from .test_api_contract import finish, store_result

jobs = pytest.importorskip("praisonai_code.cli.features.jobs")


def test_jobs_handler_submit_status_list_cancel_result(
    api: Any, cluster: ClusterThread, namespace: str
) -> None:
    handler = jobs.JobsHandler(api_url=api.base_url)
    submitted = handler.submit(
        "Analyze the quarterly sales data",
        session_id="project-alpha",
        idempotency_key="praison-key",
        idempotency_scope="session",
        output_json=True,
    )
    job_id = submitted["job_id"]
    assert submitted["status"] == "queued"
    # the same call again (PraisonAI sends framework+timeout+key in the body too) is a replay
    again = handler.submit(
        "Analyze the quarterly sales data",
        session_id="project-alpha",
        idempotency_key="praison-key",
        output_json=True,
    )
    assert again["job_id"] == job_id

    status = handler.status(job_id)
    assert status["status"] == "queued"
    assert status["progress"]["percentage"] == 0

    listed = handler.list_jobs(status="queued", page=1, page_size=20)
    assert [j["job_id"] for j in listed["jobs"]] == [job_id]

    store_result(cluster, namespace, job_id, "the answer")
    finish(cluster, namespace, job_id)
    result = handler.result(job_id)
    assert result["result"] == "the answer"
    assert result["status"] == "succeeded"

    other = handler.submit("second", output_json=True)["job_id"]
    cancelled = handler.cancel(other)
    assert cancelled["status"] == "cancelled"


def test_recipe_job_handle_polls_and_cancels(api: Any) -> None:
    import httpx
    from praisonai.recipe.operations import JobHandle

    job_id = httpx.post(api.base_url + "/api/v1/runs", json={"prompt": "x"}).json()["job_id"]
    with JobHandle(job_id=job_id, recipe_name="none", api_url=api.base_url) as handle:
        assert handle.get_status()["status"] == "queued"
        assert handle.cancel() is True
        assert handle.get_status()["status"] == "cancelled"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        "from praisonai_code.cli.features.jobs import handle_run_command\n"
        "handle_run_command(sys.argv[1:])\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_praisonai_run_cli_front_end(api: Any) -> None:
    submitted = _cli("submit", "hello from the cli", "--json", "--api-url", api.base_url)
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    status = _cli("status", job_id, "--json", "--api-url", api.base_url)
    assert status.returncode == 0, status.stderr
    assert '"status": "queued"' in status.stdout
    listed = _cli("list", "--json", "--api-url", api.base_url)
    assert listed.returncode == 0, listed.stderr
    assert job_id in listed.stdout
    cancelled = _cli("cancel", job_id, "--json", "--api-url", api.base_url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert '"status": "cancelled"' in cancelled.stdout
