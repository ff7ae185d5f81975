"""The emulated cluster's controllers in one bundle: fake Job controller, kubelet, fault injection.

Used by ``agentrun dev`` (dev.py), the test harness (system.py, testing.py). Call
:meth:`ClusterControllers.install` before the apiserver starts (it adds the ``/_emulator/faults``
routes and the pod log provider), then :meth:`start` once it serves, on the same event loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentrun_kube.client import load_api_client

from agentrun_devcluster.faults import FaultInjector
from agentrun_devcluster.jobcontroller import JobController, JobControllerSettings
from agentrun_devcluster.kube_json import JsonKube
from agentrun_devcluster.kubelet import Kubelet, KubeletSettings, PodLogStore

#: The runner pods' ServiceAccount as the chart creates it in every watched namespace
#: (``runner.serviceAccount.name``, the operator's default).
RUNNER_SERVICE_ACCOUNT = "agentrun-runner"


class ClusterControllers:
    """Job controller + kubelet talking to one emulated apiserver over HTTP."""

    def __init__(
        self,
        *,
        kubelet_settings: KubeletSettings | None = None,
        job_settings: JobControllerSettings | None = None,
        faults: FaultInjector | None = None,
        service_accounts: tuple[str, ...] = (RUNNER_SERVICE_ACCOUNT,),
    ) -> None:
        self.service_accounts = service_accounts
        self.kubelet_settings = kubelet_settings or KubeletSettings()
        self.job_settings = job_settings or JobControllerSettings()
        self.faults = faults or FaultInjector()
        self.logs = PodLogStore(self.kubelet_settings.log_max_bytes)
        self.job_controller: JobController | None = None
        self.kubelet: Kubelet | None = None
        self._api: Any = None

    def install(self, server: Any) -> None:
        """Register the fault routes and the log provider on an EmulatedAPIServer (before start),
        and give every namespace the ``service_accounts`` (the apiserver refuses pods whose
        ServiceAccount is missing, as a real one does)."""
        server.state.ensure_service_accounts(list(self.service_accounts))
        self.faults.install_routes(server)
        server.set_pod_log_provider(self.logs)

    async def start(self, kubeconfig: str | Path) -> None:
        self._api = await load_api_client(str(kubeconfig))
        kube = JsonKube(self._api)
        self.kubelet = Kubelet(kube, self.kubelet_settings, self.faults, self.logs)
        self.job_controller = JobController(kube, self.job_settings)
        await self.kubelet.start()
        await self.job_controller.start()

    async def stop(self) -> None:
        """Stop both; every container process is killed (no stray processes)."""
        if self.job_controller is not None:
            await self.job_controller.stop()
        if self.kubelet is not None:
            await self.kubelet.stop()
        if self._api is not None:
            await self._api.close()
            self._api = None
