"""Two operators with leader election, the Lease API failing for 10 s (issue 11): never two
leaders acting. Both operators reach the emulated apiserver through a recording proxy that fails
every Lease request for 10 s (the leader's renewals get no answer, the standby's are reset or
answered 503); every write
an operator makes carries its identity in the User-Agent, so the proxy's record says who acted
when. The runs submitted around the outage all finish, with their results."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import operator_harness as h
import pytest
import yaml
from agentrun_contract import names
from agentrun_devcluster.system import ControlledCluster, SyncKube, free_port
from aiohttp import ClientSession, ClientTimeout, web

LEASE_PATH = "/apis/coordination.k8s.io/"
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}
OUTAGE_SECONDS = 10.0


@dataclass
class Write:
    started: float
    ended: float
    identity: str
    method: str
    path: str
    status: int


class LeaseFaultProxy:
    """HTTP proxy to the apiserver (streams included) that records the operators' writes and,
    while ``failing`` is set, fails every Lease request: those of the identities in
    ``hang_for`` get no answer (half-open), the others are reset or answered 503 in turn."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.failing = threading.Event()
        self.writes: list[Write] = []
        self.renewals: dict[str, list[float]] = {}
        """Per identity, when each successful Lease write (acquire or renew) was received."""
        self.lease_faults = 0
        self._kinds = itertools.cycle(("reset", "unavailable"))
        self.hang_for: set[str] = set()
        """Identities whose Lease requests get no answer (half-open) during the outage."""
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    def start(self) -> LeaseFaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=None), auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        # Handlers still holding a half-open Lease request: end them with the proxy.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(LEASE_PATH) and self.failing.is_set():
            identity = request.headers.get("User-Agent", "").partition("/")[2]
            with self._lock:
                self.lease_faults += 1
                kind = "silent" if identity in self.hang_for else next(self._kinds)
            if kind == "reset":
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=503)
            if kind == "silent":
                # Half-open: no answer for the rest of the outage and beyond.
                await asyncio.sleep(OUTAGE_SECONDS + 2)
            return web.json_response(
                {"kind": "Status", "code": 503, "reason": "ServiceUnavailable"}, status=503
            )
        started = time.monotonic()
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=await request.read(),
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS},
            )
            try:
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionResetError:
                return response  # the client went away (a stopped operator, a closed watch)
        agent = request.headers.get("User-Agent", "")
        if (
            request.path.startswith(LEASE_PATH)
            and request.method in ("PUT", "POST")
            and upstream.status < 300
        ):
            with self._lock:
                self.renewals.setdefault(agent.partition("/")[2], []).append(started)
        elif request.method != "GET" and agent.startswith("agentrun-operator/"):
            with self._lock:
                self.writes.append(
                    Write(
                        started,
                        time.monotonic(),
                        agent.split("/", 1)[1],
                        request.method,
                        request.path,
                        upstream.status,
                    )
                )
        return response


@pytest.fixture
def proxy(op_cluster: ControlledCluster) -> Iterator[LeaseFaultProxy]:
    p = LeaseFaultProxy(op_cluster.base_url).start()
    try:
        yield p
    finally:
        p.stop()


def proxied_kubeconfig(cluster: ControlledCluster, proxy: LeaseFaultProxy, path: Path) -> str:
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    config["clusters"][0]["cluster"]["server"] = proxy.url
    path.write_text(yaml.safe_dump(config))
    return str(path)


def leader_flag(op: h.OperatorProcess) -> bool:
    try:
        r = httpx.get(f"http://127.0.0.1:{op.health_port}/health", timeout=5)
        return bool(r.json().get("leader"))
    except httpx.HTTPError:
        return False


def overlapping_leaders(writes: list[Write]) -> list[str]:
    """Every time one identity wrote after another identity had started writing (and then
    wrote again itself): two leaders acting at once."""
    ordered = sorted(writes, key=lambda w: w.started)
    problems: list[str] = []
    finished: set[str] = set()
    current: str | None = None
    for write in ordered:
        if write.identity != current:
            if current is not None:
                finished.add(current)
            if write.identity in finished:
                problems.append(
                    f"{write.identity} wrote {write.method} {write.path} after "
                    f"{current} had taken over"
                )
            current = write.identity
    # A write still in flight when the next leader's first write started.
    for earlier, later in itertools.pairwise(ordered):
        if earlier.identity != later.identity and earlier.ended > later.started + 0.05:
            problems.append(f"{earlier.identity} and {later.identity} wrote concurrently")
    return problems


def writes_without_a_valid_lease(
    writes: list[Write], renewals: dict[str, list[float]], lease_seconds: float
) -> list[str]:
    """Writes made more than a lease duration after the writer's last successful Lease write:
    by then another replica may have taken over, so the writer must have stopped acting."""
    problems: list[str] = []
    for write in writes:
        before = [t for t in renewals.get(write.identity, []) if t <= write.started]
        if not before or write.started - max(before) >= lease_seconds:
            age = write.started - max(before) if before else float("inf")
            problems.append(
                f"{write.identity} wrote {write.method} {write.path} {age:.1f} s after its "
                "last Lease renewal"
            )
    return problems


def test_lease_api_failing_for_10s_never_two_leaders_acting(
    op_cluster: ControlledCluster,
    k: SyncKube,
    proxy: LeaseFaultProxy,
    workdir: Path,
    start_operator: Callable[..., h.OperatorProcess],
) -> None:
    h.create_credentials(k)
    env = {
        "AGENTRUN_OPERATOR_LEADER_ELECTION__ENABLED": "true",
        "AGENTRUN_OPERATOR_LEADER_ELECTION__LEASE_DURATION_SECONDS": "3",
        # renew deadline 2 s: a leader that cannot renew stops 1 s before the lease ends
        "AGENTRUN_OPERATOR_LEADER_ELECTION__RENEW_SECONDS": "1",
        "AGENTRUN_OPERATOR_LEADER_ELECTION__RETRY_SECONDS": "0.3",
    }

    def start(identity: str) -> h.OperatorProcess:
        config = proxied_kubeconfig(op_cluster, proxy, workdir / f"{identity}.kubeconfig")
        return start_operator(
            tag=identity,
            KUBECONFIG=config,
            AGENTRUN_OPERATOR_KUBECONFIG=config,
            AGENTRUN_OPERATOR_LEADER_ELECTION__IDENTITY=identity,
            **env,
        )

    a = start("op-a")
    k.wait_for("op-a leads", lambda: leader_flag(a), timeout=30)
    b = start("op-b")
    time.sleep(1.0)
    assert not leader_flag(b), "only one replica leads"

    run_names = [f"lf-{i}" for i in range(6)]
    for name in run_names[:3]:
        h.make_run(k, name, "sleep=6 steps=6 lines=5")
    k.wait_for("runs running", lambda: h.get_run(k, run_names[0]).get("status", {}).get("phase"))
    time.sleep(1.0)

    proxy.hang_for = {"op-a"}  # the leader's renewals hang; the standby's fail fast
    proxy.failing.set()
    outage_started = time.monotonic()
    for name in run_names[3:]:
        h.make_run(k, name, "sleep=2 steps=2 lines=5")
        time.sleep(1.0)
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))
    proxy.failing.clear()

    logs = lambda: a.log()[-4000:] + "\n--- op-b ---\n" + b.log()[-4000:]  # noqa: E731
    for name in run_names:
        run = h.wait_transcript_complete(k, name, timeout=90)
        assert run["status"]["phase"] == "Succeeded", (name, run["status"], logs())
        events = h.transcript(k, name)
        ids = [e.id for e in events]
        assert ids == list(range(1, len(ids) + 1)), (name, ids)
        complete = [e for e in events if e.event == "complete"]
        assert len(complete) == 1
        assert complete[0].data["result"] == f"tiny result for {name}", complete[0].data
        stored = k.get(f"{h.RESULTS}/{names.result_name(name)}")
        assert stored["spec"]["result"] == f"tiny result for {name}"
        assert len(h.jobs_of(k, name)) == 1, name

    assert proxy.lease_faults > 0, "the Lease API was never called during the outage"
    identities = {w.identity for w in proxy.writes}
    assert identities, "no operator write was recorded"
    problems = overlapping_leaders(proxy.writes) + writes_without_a_valid_lease(
        proxy.writes, proxy.renewals, lease_seconds=3.0
    )
    assert not problems, "\n".join(problems[:20]) + "\n" + logs()
    # op-a could not renew for longer than its renew deadline: it stopped acting and exited.
    assert a.proc.wait(timeout=30) == 1, logs()
    assert "leadership lost" in a.log()
    assert "op-b" in identities, "op-b never took over"
