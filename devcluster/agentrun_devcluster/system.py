"""Test harness: the emulated cluster with its controllers, and the whole `agentrun dev` stack.

- :class:`ControlledCluster`: a :class:`~agentrun_devcluster.testing.ClusterThread` (emulated
  apiserver in a background thread) plus the fake Job controller, kubelet and fault injection on
  the same loop. Pods really run, as local subprocesses.
- :class:`DevSystem`: a ControlledCluster plus the operator and the API as subprocesses
  (``agentrun operator`` / ``agentrun api``) configured through env overrides, as ``agentrun dev``
  starts them, with test-sized intervals. Exposes ``api_url``, ``kubeconfig``, ``faults``,
  ``namespace``, :meth:`DevSystem.start_api` (a second API replica), :meth:`restart_operator`
  and :meth:`kill_operator` for chaos tests, :meth:`DevSystem.logs` for failure messages. It
  creates the namespace and the LLM credentials Secret with a dummy key (``llm_credentials={}``
  for none: runs then fail with missing_credentials); the runner is the tiny runner.
- :class:`SyncKube`: a blocking JSON client for test code (``wait_for`` polls a probe).

Every child process (operator, API, containers) is SIGKILLed by the kernel if its parent dies
(PR_SET_PDEATHSIG), so an aborted test run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from agentrun_devcluster.apiserver.faults import SYSTEM_TOKEN
from agentrun_devcluster.controllers import ClusterControllers
from agentrun_devcluster.faults import FaultInjector
from agentrun_devcluster.jobcontroller import JobControllerSettings
from agentrun_devcluster.kubelet import KubeletSettings, die_with_parent
from agentrun_devcluster.testing import REPO_ROOT, ClusterThread

TINY_RUNNER_COMMAND = [sys.executable, "-m", "agentrun_devcluster.tiny_runner"]
AGENTS_DIR = REPO_ROOT / "runner-image" / "agents"


def small_kubelet_settings(state_dir: Path) -> KubeletSettings:
    """Kubelet timing for tests: every retry interval small."""
    return KubeletSettings(
        state_dir=state_dir,
        image_filesystem={"/agents": str(AGENTS_DIR)},
        config_retry_seconds=0.3,
        image_pull_retry_seconds=0.3,
        schedule_retry_seconds=0.2,
        fault_poll_seconds=0.05,
    )


def small_job_settings() -> JobControllerSettings:
    return JobControllerSettings(backoff_seconds=0.2, resync_seconds=2.0)


class ControlledCluster(ClusterThread):
    """ClusterThread + Job controller + kubelet + faults (``.faults``, ``.controllers``)."""

    def __init__(
        self,
        *,
        kubelet_settings: KubeletSettings | None = None,
        job_settings: JobControllerSettings | None = None,
        faults: FaultInjector | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._state_tmp: tempfile.TemporaryDirectory[str] | None = None
        if kubelet_settings is None:
            self._state_tmp = tempfile.TemporaryDirectory(prefix="agentrun-kubelet-")
            kubelet_settings = small_kubelet_settings(Path(self._state_tmp.name))
        self.controllers = ClusterControllers(
            kubelet_settings=kubelet_settings,
            job_settings=job_settings or small_job_settings(),
            faults=faults,
        )
        self.faults = self.controllers.faults

    def start(self) -> ControlledCluster:
        self.controllers.install(self.server)
        super().start()
        try:
            # The fake kubelet and Job controller stand for the cluster: faults never hit them.
            system_kubeconfig = self.server.write_kubeconfig(
                self.kubeconfig.parent / "system.kubeconfig", token=SYSTEM_TOKEN
            )
            self.call(self.controllers.start(system_kubeconfig))
        except BaseException:
            super().stop()
            raise
        return self

    def stop(self) -> None:
        try:
            if self.loop.is_running():
                self.call(self.controllers.stop(), timeout=60)
        finally:
            super().stop()
            if self._state_tmp is not None:
                self._state_tmp.cleanup()
                self._state_tmp = None

    def running_pids(self) -> list[int]:
        kubelet = self.controllers.kubelet
        return kubelet.running_pids() if kubelet is not None else []

    def __enter__(self) -> ControlledCluster:
        return self.start()


# ---------------------------------------------------------------------------------------------
# The whole stack


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free ports (worker i serves metrics on base + i)."""
    for _ in range(100):
        base = free_port()
        try:
            for offset in range(count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


def _require_module(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise RuntimeError(
            f"{what} is not there yet: module {module} is missing. The `system` fixture needs "
            f"the API (agentrun_api.main) and the operator (agentrun_operator.main)."
        )


def operator_env(
    *,
    kubeconfig: Path,
    namespace: str,
    public_base_url: str,
    runner_command: list[str],
    health_port: int,
    metrics_port: int,
) -> dict[str, str]:
    """Env settings of the operator process as ``agentrun dev`` passes them."""
    return {
        "KUBECONFIG": str(kubeconfig),
        "AGENTRUN_OPERATOR_KUBECONFIG": str(kubeconfig),
        "AGENTRUN_OPERATOR_NAMESPACES": json.dumps([namespace]),
        "AGENTRUN_OPERATOR_RUNNER_COMMAND": json.dumps(runner_command),
        "AGENTRUN_OPERATOR_PUBLIC_BASE_URL": public_base_url,
        "AGENTRUN_OPERATOR_WEBHOOK_POLICY__ALLOW_LOOPBACK": "true",
        "AGENTRUN_OPERATOR_LEADER_ELECTION__ENABLED": "true",
        "AGENTRUN_OPERATOR_HEALTH_PORT": str(health_port),
        "AGENTRUN_OPERATOR_HEALTH_HOST": "127.0.0.1",
        "AGENTRUN_OPERATOR_METRICS_PORT": str(metrics_port),
    }


def api_env(
    *,
    kubeconfig: Path,
    namespace: str,
    host: str,
    port: int,
    public_base_url: str,
    metrics_port: int,
) -> dict[str, str]:
    """Env settings of the API process as ``agentrun dev`` passes them."""
    return {
        "KUBECONFIG": str(kubeconfig),
        "AGENTRUN_API_KUBECONFIG": str(kubeconfig),
        "AGENTRUN_API_HOST": host,
        "AGENTRUN_API_PORT": str(port),
        "AGENTRUN_API_METRICS_PORT": str(metrics_port),
        "AGENTRUN_API_NAMESPACE": namespace,
        "AGENTRUN_API_AUTH_ENABLED": "false",
        "AGENTRUN_API_PUBLIC_BASE_URL": public_base_url,
        "AGENTRUN_API_WEBHOOK_POLICY__ALLOW_LOOPBACK": "true",
    }


TEST_OPERATOR_ENV: dict[str, str] = {
    "AGENTRUN_OPERATOR_LEADER_ELECTION__LEASE_DURATION_SECONDS": "3",
    "AGENTRUN_OPERATOR_LEADER_ELECTION__RENEW_SECONDS": "1",
    "AGENTRUN_OPERATOR_LEADER_ELECTION__RETRY_SECONDS": "0.5",
    "AGENTRUN_OPERATOR_TRANSCRIPT_FLUSH_SECONDS": "0.2",
    "AGENTRUN_OPERATOR_TERMINATION_GRACE_PERIOD_SECONDS": "3",
    "AGENTRUN_OPERATOR_RESYNC_SECONDS": "1",
    "AGENTRUN_OPERATOR_LOG_RECONNECT_SECONDS": "0.2",
}
"""Test-sized operator intervals (names from agentrun_operator.settings)."""

DEFAULT_CREDENTIALS_SECRET = "agentrun-llm-credentials"
TEST_LLM_CREDENTIALS: dict[str, str] = {"OPENAI_API_KEY": "test-not-a-real-key"}
"""Put in the credentials Secret by DevSystem (the tiny runner never calls an LLM)."""


def start_process(
    args: list[str], env: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group, output to ``log_path``."""
    full_env = dict(os.environ)
    full_env.update(env)
    log_file = log_path.open("ab")
    try:
        return subprocess.Popen(
            args,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    finally:
        log_file.close()


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0
) -> None:
    """Signal the child's process group; SIGKILL the group after ``timeout``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def wait_http_ok(
    url: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll ``url`` until it answers 2xx; fail early if ``proc`` died (with its log tail)."""
    deadline = time.monotonic() + timeout
    last: str = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code < 300:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.1)
    tail = ""
    if log_path is not None and log_path.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
    state = "exited" if proc is not None and proc.poll() is not None else "not ready"
    raise RuntimeError(f"{url} {state} ({last}); log tail:\n{tail}")


class DevSystem:
    """The full stack for tests: cluster + controllers in a thread, operator + API processes."""

    def __init__(
        self,
        *,
        namespace: str = "default",
        runner_command: list[str] | None = None,
        operator_env_overrides: Mapping[str, str] | None = None,
        api_env_overrides: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        llm_credentials: Mapping[str, str] | None = None,
    ) -> None:
        _require_module("agentrun_api.main", "The API")
        _require_module("agentrun_operator.main", "The operator")
        self.namespace = namespace
        self.runner_command = runner_command or list(TINY_RUNNER_COMMAND)
        self.operator_overrides = {**TEST_OPERATOR_ENV, **(operator_env_overrides or {})}
        self.api_overrides = dict(api_env_overrides or {})
        self.start_timeout = start_timeout
        self.llm_credentials = (
            dict(llm_credentials) if llm_credentials is not None else dict(TEST_LLM_CREDENTIALS)
        )
        self.cluster = ControlledCluster(namespace=namespace)
        self.faults = self.cluster.faults
        self.workdir = Path(tempfile.mkdtemp(prefix="agentrun-system-"))
        self.operator: subprocess.Popen[bytes] | None = None
        self.operator_log = self.workdir / "operator.log"
        self.operator_health_port = 0
        self.apis: list[tuple[subprocess.Popen[bytes], str, Path]] = []
        self.api_url = ""

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    def start(self) -> DevSystem:
        self.cluster.start()
        try:
            self._seed_cluster()
            port = free_port()
            self.api_url = f"http://127.0.0.1:{port}"
            self.start_operator()
            self.start_api(port=port)
        except BaseException:
            self.stop()
            raise
        return self

    def _seed_cluster(self) -> None:
        """The namespace, and the LLM credentials Secret unless ``llm_credentials={}``."""
        kube = SyncKube(self.cluster.base_url)
        try:
            if kube.get_or_none(f"/api/v1/namespaces/{self.namespace}") is None:
                kube.create(
                    "/api/v1/namespaces",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
                )
            if self.llm_credentials:
                name = self.operator_overrides.get(
                    "AGENTRUN_OPERATOR_CREDENTIALS_SECRET", DEFAULT_CREDENTIALS_SECRET
                )
                kube.create(
                    f"/api/v1/namespaces/{self.namespace}/secrets",
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": name},
                        "stringData": self.llm_credentials,
                    },
                )
        finally:
            kube.close()

    def start_operator(self) -> None:
        self.operator_health_port = free_port()
        env = operator_env(
            kubeconfig=self.kubeconfig,
            namespace=self.namespace,
            public_base_url=self.api_url,
            runner_command=self.runner_command,
            health_port=self.operator_health_port,
            metrics_port=free_port(),
        )
        env.update(self.operator_overrides)
        self.operator = start_process(
            [sys.executable, "-m", "agentrun_cli.main", "operator"], env, self.operator_log
        )
        wait_http_ok(
            f"http://127.0.0.1:{self.operator_health_port}/livez",
            self.start_timeout,
            self.operator,
            self.operator_log,
        )

    def start_api(self, extra_env: Mapping[str, str] | None = None, port: int = 0) -> str:
        """Start an API process (another replica when one runs); returns its base URL."""
        port = port or free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = self.workdir / f"api-{len(self.apis)}.log"
        env = api_env(
            kubeconfig=self.kubeconfig,
            namespace=self.namespace,
            host="127.0.0.1",
            port=port,
            public_base_url=url,
            metrics_port=free_port(),
        )
        env.update(self.api_overrides)
        env.update(extra_env or {})
        proc = start_process([sys.executable, "-m", "agentrun_cli.main", "api"], env, log_path)
        self.apis.append((proc, url, log_path))
        wait_http_ok(f"{url}/health", self.start_timeout, proc, log_path)
        return url

    def kill_operator(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the operator's process group and wait for it to exit."""
        if self.operator is not None:
            stop_process(self.operator, sig, timeout=15)
            self.operator = None

    def restart_operator(self, sig: int = signal.SIGTERM) -> None:
        self.kill_operator(sig)
        self.start_operator()

    def logs(self) -> str:
        """Operator and API logs (for failure messages)."""
        parts = []
        for path in [self.operator_log, *(p for _, _, p in self.apis)]:
            if path.exists():
                parts.append(f"==> {path.name}\n{path.read_text(errors='replace')[-5000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for proc, _, _ in self.apis:
            stop_process(proc)
        self.apis.clear()
        self.kill_operator(signal.SIGTERM)
        self.cluster.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DevSystem:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# A small synchronous client for tests (plain JSON over httpx; the emulator takes any token)


class SyncKube:
    """Blocking JSON calls to the emulated apiserver, for test code in pytest's thread.

    ``token=SYSTEM_TOKEN`` (apiserver/faults.py): the apiserver's faults never hit this client
    (a checker that must see the truth while the system under test gets the faults)."""

    def __init__(self, base_url: str, timeout: float = 30.0, token: str = "test") -> None:
        self.http = httpx.Client(
            base_url=base_url, timeout=timeout, headers={"Authorization": f"Bearer {token}"}
        )

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.http.request(method, path, **kwargs)
        if r.status_code >= 400:
            raise httpx.HTTPStatusError(
                f"{method} {path}: {r.status_code} {r.text}", request=r.request, response=r
            )
        return r.json() if r.content else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def get_or_none(self, path: str) -> Any:
        r = self.http.get(path)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def create(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body)

    def merge_patch(self, path: str, patch: dict[str, Any]) -> Any:
        return self.request(
            "PATCH",
            path,
            content=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
        )

    def delete(self, path: str, **options: Any) -> Any:
        return self.request("DELETE", path, json={"kind": "DeleteOptions", **options})

    def items(self, path: str, **params: Any) -> list[dict[str, Any]]:
        data = self.request("GET", path, params=params)
        return list(data.get("items") or [])

    def wait_for(self, what: str, probe: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
        """Call ``probe()`` until it returns a truthy value; fail with ``what`` on timeout."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
