"""``agentrun dev``: the whole system on a laptop, no Kubernetes needed.

In this process, on one event loop: the emulated apiserver (CRDs installed), the fake Job
controller and kubelet (runs execute as local processes), and with ``--stub-llm`` the stub LLM.
Then the operator (``agentrun operator``) and the API (``agentrun api``) start as child processes,
each in its own process group, configured through their env settings. ``ready`` is printed once
the API answers ``/health``.

``--faults log_cut,restart,...`` (or ``all``) makes the emulated apiserver throw those faults at
random at the operator and the API (apiserver/faults.py; ``--fault-rate``, ``--fault-interval``,
``--fault-seed``; the seed is printed). The fake kubelet and Job controller use a system token
that faults never hit. Under faults, a child that exits is restarted, as its Deployment would be.

SIGINT (Ctrl-C) and SIGTERM stop everything: the API and the operator get SIGTERM (then SIGKILL
after ``shutdown_grace_seconds``) by process group, every runner process group is SIGKILLed by the
kubelet, and the servers close. If the operator or the API dies on its own, dev stops too and
prints the tail of its log (exit code 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import httpx
from agentrun_kube.client import load_api_client
from agentrun_kube.errors import KubeError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentrun_devcluster.apiserver import EmulatedAPIServer
from agentrun_devcluster.apiserver.faults import SYSTEM_TOKEN, ChaosConfig
from agentrun_devcluster.controllers import RUNNER_SERVICE_ACCOUNT, ClusterControllers
from agentrun_devcluster.faults import chaos_config, parse_fault_list
from agentrun_devcluster.jobcontroller import JobControllerSettings
from agentrun_devcluster.kube_json import JsonKube
from agentrun_devcluster.kubelet import KubeletSettings
from agentrun_devcluster.system import (
    AGENTS_DIR,
    api_env,
    free_port,
    operator_env,
    start_process,
    stop_process,
)
from agentrun_devcluster.testing import CRD_FILE

log = logging.getLogger(__name__)


class DevSettings(BaseSettings):
    """Settings of the ``agentrun dev`` process itself (env ``AGENTRUN_DEV_*``, nested with
    ``__``, e.g. ``AGENTRUN_DEV_KUBELET__CONFIG_RETRY_SECONDS=1``). The operator and the API
    read their own settings (AGENTRUN_OPERATOR_*, AGENTRUN_API_*), which win over dev's."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTRUN_DEV_", env_nested_delimiter="__", extra="ignore"
    )

    kubelet: KubeletSettings = Field(
        default_factory=KubeletSettings,
        description="The fake kubelet (its state_dir is <--state-dir>/kubelet).",
    )
    job_controller: JobControllerSettings = Field(
        default_factory=JobControllerSettings, description="The fake Job controller."
    )
    shutdown_grace_seconds: float = Field(
        default=10.0,
        gt=0,
        description="SIGTERM to SIGKILL delay for the operator and API on stop.",
    )
    ready_timeout_seconds: float = Field(
        default=120.0, gt=0, description="How long the operator and the API may take to start."
    )


DEFAULT_CREDENTIALS_SECRET = "agentrun-llm-credentials"  # operator default
CREDENTIAL_ENV_SUFFIXES = ("_API_KEY", "_API_BASE", "_BASE_URL", "_API_VERSION")
"""Variables that configure an LLM provider, as litellm names them (OPENAI_API_KEY,
ANTHROPIC_API_KEY, AZURE_API_BASE, AZURE_API_VERSION, OLLAMA_API_BASE, ...)."""
STUB_MODEL = "openai/agentrun-stub"
RUNNER_COMMANDS = {
    "praisonai": ["agentrun-runner"],
    "tiny": ["python", "-m", "agentrun_devcluster.tiny_runner"],
}


def runner_service_account() -> str:
    """The operator's ``runner_service_account`` setting, as the operator child will read it."""
    return os.environ.get("AGENTRUN_OPERATOR_RUNNER_SERVICE_ACCOUNT") or RUNNER_SERVICE_ACCOUNT


def credentials_secret_name() -> str:
    """The operator's ``credentials_secret`` setting, as the operator child will read it."""
    return os.environ.get("AGENTRUN_OPERATOR_CREDENTIALS_SECRET") or DEFAULT_CREDENTIALS_SECRET


def credentials_from_env(environ: dict[str, str]) -> dict[str, str] | None:
    """The LLM credentials to put in the Secret, from the caller's env: ``MODEL_NAME`` and
    every provider variable (any litellm provider: a key, or a base URL for keyless ones such
    as Ollama); None when there is neither a key nor an ``OLLAMA_API_BASE``."""
    found = {
        k: v
        for k, v in environ.items()
        if v and (k == "MODEL_NAME" or k.endswith(CREDENTIAL_ENV_SUFFIXES))
    }
    if not any(k.endswith("_API_KEY") for k in found) and "OLLAMA_API_BASE" not in found:
        return None
    return found


def stub_credentials(stub_url: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": "stub", "OPENAI_BASE_URL": stub_url, "MODEL_NAME": STUB_MODEL}


def seed_curl(api_url: str) -> str:
    return (
        f"curl -X POST {api_url}/api/v1/runs \\\n"
        '  -H "Content-Type: application/json" \\\n'
        '  -H "Idempotency-Key: unique-key-123" \\\n'
        "  -d '{\n"
        '    "prompt": "Analyze the quarterly sales data",\n'
        '    "timeout": 3600,\n'
        '    "webhook_url": "https://example.com/callback",\n'
        '    "session_id": "project-alpha"\n'
        "  }'"
    )


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


class DevStack:
    """Everything ``agentrun dev`` runs; :meth:`start` then :meth:`wait`, :meth:`stop` always."""

    def __init__(
        self,
        args: argparse.Namespace,
        out: TextIO = sys.stdout,
        settings: DevSettings | None = None,
    ) -> None:
        self.args = args
        self.out = out
        self.state_dir = Path(args.state_dir).resolve()
        self.kubeconfig = Path(args.kubeconfig or self.state_dir / "kubeconfig").resolve()
        self.namespace: str = args.namespace
        self.api_url = f"http://{_url_host(args.host)}:{args.port}"
        self.settings = settings or DevSettings()
        self.server = EmulatedAPIServer()
        kubelet = self.settings.kubelet.model_copy(
            update={
                "state_dir": self.state_dir / "kubelet",
                "image_filesystem": {"/agents": str(AGENTS_DIR)}
                | self.settings.kubelet.image_filesystem,
            }
        )
        self.controllers = ClusterControllers(
            kubelet_settings=kubelet,
            job_settings=self.settings.job_controller,
            # what the chart would create: the runner Job's ServiceAccount, in every namespace
            service_accounts=(runner_service_account(),),
        )
        self.stub: Any = None
        self.children: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self.stop_requested = asyncio.Event()
        self.chaos = fault_config(args)
        self._child_env: dict[str, dict[str, str]] = {}
        #: With --faults: how many times each child exited on its own and was restarted.
        self.restarts: dict[str, int] = {}

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def crd_file(self) -> Path:
        """deploy/crds/agentrun.dev.yaml from a source checkout, else generated from the models
        (an installed, non-editable package has no deploy/ folder)."""
        if CRD_FILE.exists():
            return CRD_FILE
        from agentrun_contract.crd import render_crds_yaml

        generated = self.state_dir / "crds.yaml"
        generated.write_text(render_crds_yaml())
        return generated

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        check_port_free(self.args.host, self.args.port)
        # scratch space left by a previous dev that was killed: its pods are gone with it
        shutil.rmtree(self.state_dir / "kubelet", ignore_errors=True)
        self.controllers.install(self.server)
        await self.server.start()
        await self.server.apply_crds_from_file(self.crd_file())
        self.server.write_kubeconfig(self.kubeconfig, namespace=self.namespace)
        # The fake kubelet and Job controller stand for the cluster: faults never hit them.
        system_kubeconfig = self.server.write_kubeconfig(
            self.state_dir / "system.kubeconfig", namespace=self.namespace, token=SYSTEM_TOKEN
        )
        await self.controllers.start(system_kubeconfig)
        api = await load_api_client(str(self.kubeconfig))
        try:
            kube = JsonKube(api)
            await self._ensure_namespace(kube)
            creds_note = await self._credentials(kube)
        finally:
            await api.close()
        self._start_children()
        self.say(f"agentrun dev: emulated cluster at {self.server.base_url}")
        self.say(creds_note)
        await self._wait_ready()
        self._banner()
        if self.chaos is not None:
            self.server.start_chaos(self.chaos)
            self.say(
                f"agentrun dev: FAULTS on ({self.chaos.describe()}); replay these random "
                f"choices with --fault-seed {self.chaos.seed}"
            )

    async def _ensure_namespace(self, kube: JsonKube) -> None:
        if await kube.get_or_none(f"/api/v1/namespaces/{self.namespace}") is None:
            await kube.create(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
            )

    async def _credentials(self, kube: JsonKube) -> str:
        name = credentials_secret_name()
        if self.args.stub_llm:
            from agentrun_devcluster.stub_llm import StubLLMServer

            self.stub = StubLLMServer()
            url = await self.stub.start()
            data = stub_credentials(url)
            note = (
                f"LLM: STUB LLM at {url} (--stub-llm: deterministic, labelled answers; no real "
                f"model). Secret {self.namespace}/{name} points runs at it."
            )
        else:
            creds = credentials_from_env(dict(os.environ))
            if creds is None:
                return (
                    "WARNING: no LLM credentials: no provider key (OPENAI_API_KEY, "
                    "ANTHROPIC_API_KEY, ...) nor OLLAMA_API_BASE is set, so the Secret "
                    f"{self.namespace}/{name} was not created and runs will fail with "
                    "missing_credentials. Fix: export OPENAI_API_KEY=... (or another "
                    "provider's variables, and MODEL_NAME) before `agentrun dev`, or use "
                    "--stub-llm."
                )
            data = creds
            note = (
                f"LLM: credentials from your environment ({', '.join(sorted(data))}) stored in "
                f"Secret {self.namespace}/{name}."
            )
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": self.namespace},
            "type": "Opaque",
            "stringData": data,
        }
        try:
            await kube.create(f"/api/v1/namespaces/{self.namespace}/secrets", secret)
        except KubeError as exc:
            if exc.status != 409:
                raise
        return note

    def _start_children(self) -> None:
        runner = RUNNER_COMMANDS[self.args.runner]
        op_env = operator_env(
            kubeconfig=self.kubeconfig,
            namespace=self.namespace,
            public_base_url=self.api_url,
            runner_command=runner,
            health_port=free_port(),
            metrics_port=free_port(),
        )
        self.operator_health = f"http://127.0.0.1:{op_env['AGENTRUN_OPERATOR_HEALTH_PORT']}"
        if "AGENTRUN_OPERATOR_HEALTH_PORT" in os.environ:
            self.operator_health = f"http://127.0.0.1:{os.environ['AGENTRUN_OPERATOR_HEALTH_PORT']}"
        a_env = api_env(
            kubeconfig=self.kubeconfig,
            namespace=self.namespace,
            host=self.args.host,
            port=self.args.port,
            public_base_url=self.api_url,
            metrics_port=free_port(),
        )
        # an explicit setting in the caller's env wins over dev's defaults
        for env in (op_env, a_env):
            for key in list(env):
                if key.startswith("AGENTRUN_") and key in os.environ:
                    env[key] = os.environ[key]
        for name, env in (("operator", op_env), ("api", a_env)):
            log_path = self.state_dir / f"{name}.log"
            log_path.write_bytes(b"")
            proc = start_process([sys.executable, "-m", "agentrun_cli.main", name], env, log_path)
            self.children[name] = (proc, log_path)
            self._child_env[name] = env

    async def _wait_ready(self) -> None:
        """Until the operator answers /livez and the API /health (each process checked)."""
        deadline = time.monotonic() + self.settings.ready_timeout_seconds
        pending = {
            "operator": f"{self.operator_health}/livez",
            "API": f"{self.api_url}/health",
        }
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                self._check_children()
                for what, url in list(pending.items()):
                    try:
                        r = await client.get(url)
                        if r.status_code < 300:
                            del pending[what]
                    except httpx.HTTPError:
                        pass
                if not pending:
                    return
                if self.stop_requested.is_set():
                    raise ChildFailed("stopped before ready")
                await asyncio.sleep(0.2)
        waiting = ", ".join(f"the {what} ({url})" for what, url in pending.items())
        raise ChildFailed(f"not ready in {self.settings.ready_timeout_seconds:.0f}s: {waiting}")

    def _check_children(self) -> None:
        for name, (proc, log_path) in self.children.items():
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise ChildFailed(
                    f"the {name} process exited with code {proc.returncode}; "
                    f"last lines of {log_path}:\n{tail}"
                )

    def _banner(self) -> None:
        kc = self.kubeconfig
        self.say("")
        self.say(f"agentrun dev ready: API at {self.api_url} (auth off)")
        self.say(f"  runner: {self.args.runner}; runs execute as local processes")
        self.say(f"  kubeconfig: {kc}")
        self.say(f"    kubectl --kubeconfig {kc} get agentruns")
        self.say(f"    kubectl --kubeconfig {kc} get jobs,pods")
        self.say(f"  logs: {self.state_dir}/operator.log, {self.state_dir}/api.log")
        self.say("  try:")
        self.say(seed_curl(self.api_url))
        self.say("  Ctrl-C stops everything.")

    def _restart_exited_children(self) -> None:
        """With --faults, a child that exits is started again, as its Deployment would be (the
        operator exits when it cannot renew its Lease in time: fail closed)."""
        for name, (proc, log_path) in list(self.children.items()):
            if proc.poll() is None:
                continue
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self.say(
                f"agentrun dev: the {name} process exited with code {proc.returncode} under "
                f"faults; restarting it (restart {self.restarts[name]}, log {log_path})"
            )
            args = [sys.executable, "-m", "agentrun_cli.main", name]
            self.children[name] = (start_process(args, self._child_env[name], log_path), log_path)

    async def wait(self) -> None:
        """Until SIGINT/SIGTERM or a child's death (raises ChildFailed; with --faults the
        child is restarted instead)."""
        while not self.stop_requested.is_set():
            if self.chaos is not None:
                self._restart_exited_children()
            self._check_children()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), 0.5)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        children = list(self.children.values())
        await asyncio.gather(
            *(
                loop.run_in_executor(
                    None, stop_process, proc, signal.SIGTERM, self.settings.shutdown_grace_seconds
                )
                for proc, _ in children
            )
        )
        self.children.clear()
        with contextlib.suppress(Exception):
            await self.controllers.stop()
        if self.stub is not None:
            with contextlib.suppress(Exception):
                await self.stub.stop()
        with contextlib.suppress(Exception):
            await self.server.stop()


def fault_config(args: argparse.Namespace) -> ChaosConfig | None:
    """The random apiserver faults asked for with ``--faults`` (None without)."""
    names = getattr(args, "faults", None)
    if not names:
        return None
    return chaos_config(
        parse_fault_list(names),
        seed=getattr(args, "fault_seed", None),
        rate=getattr(args, "fault_rate", 0.02),
        interval_seconds=getattr(args, "fault_interval", 20.0),
    )


class ChildFailed(RuntimeError):
    """The operator or API process could not start or died."""


class PortInUse(RuntimeError):
    """The API's port is taken; the message says how to pick another."""


def check_port_free(host: str, port: int) -> None:
    """Fail early, with the fix, when the API could not bind ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUse(
                f"cannot serve the API on {host}:{port} ({exc.strerror}); stop whatever uses it "
                f"or pick another port: agentrun dev --port <port>"
            ) from None


async def _main(args: argparse.Namespace) -> int:
    try:
        fault_config(args)
    except ValueError as exc:
        print(f"agentrun dev: --faults: {exc}", file=sys.stderr, flush=True)
        return 2
    stack = DevStack(args)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stack.stop_requested.set)
    code = 0
    try:
        await stack.start()
        await stack.wait()
        stack.say("agentrun dev: stopping")
    except ChildFailed as exc:
        if not stack.stop_requested.is_set():
            print(f"agentrun dev: {exc}", file=sys.stderr, flush=True)
            code = 1
    except PortInUse as exc:
        print(f"agentrun dev: {exc}", file=sys.stderr, flush=True)
        code = 2
    finally:
        await stack.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    stack.say("agentrun dev: stopped")
    return code


def run_dev(args: argparse.Namespace) -> int:
    """Run until Ctrl-C / SIGTERM; returns the exit code."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return asyncio.run(_main(args))
