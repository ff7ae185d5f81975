"""The fake Job controller and kubelet against the emulated apiserver, through real HTTP.

Pods really run (local subprocesses of `python -c ...`); tests assert order and cause, with
generous time bounds.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import pytest
from agentrun_devcluster.faults import Fault
from agentrun_devcluster.system import (
    ControlledCluster,
    SyncKube,
)

NS = "default"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
PODS = f"/api/v1/namespaces/{NS}/pods"


def job_manifest(name: str, script: str, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "runner",
        "image": "agentrun-runner:dev",
        "command": ["python", "-c", script],
    }
    container.update(spec.pop("container", {}))
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    pod_spec.update(spec.pop("pod", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"test": name}},
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": {"labels": {"test": name}}, "spec": pod_spec},
            **spec,
        },
    }


def conditions(obj: dict[str, Any]) -> list[str]:
    return [
        c["type"]
        for c in (obj.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    ]


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return dict(c)
    return None


def job(kube: SyncKube, name: str) -> Any:
    return kube.get_or_none(f"{JOBS}/{name}")


def pods_of(kube: SyncKube, name: str) -> list[dict[str, Any]]:
    return kube.items(PODS, labelSelector=f"batch.kubernetes.io/job-name={name}")


def wait_condition(kube: SyncKube, name: str, ctype: str, timeout: float = 30) -> Any:
    return kube.wait_for(
        f"job {name} condition {ctype}",
        lambda: (j := job(kube, name)) is not None and ctype in conditions(j) and j,
        timeout,
    )


def terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return dict(term)
    return None


def waiting(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        w = (cs.get("state") or {}).get("waiting")
        if w:
            return dict(w)
    return None


def no_pod_running(kube: SyncKube, job_name: str) -> None:
    """Failed means no pod of the Job runs or terminates: what is left is terminal, then goes."""
    for p in pods_of(kube, job_name):
        assert p["status"].get("phase") in ("Succeeded", "Failed"), p["status"]
    kube.wait_for(f"pods of {job_name} deleted", lambda: pods_of(kube, job_name) == [], 10)


def one_pod(kube: SyncKube, name: str, timeout: float = 20) -> dict[str, Any]:
    pods = kube.wait_for(f"pod of {name}", lambda: pods_of(kube, name), timeout)
    assert len(pods) == 1
    return dict(pods[0])


def test_success_pod_shape_conditions_and_log(kube: SyncKube) -> None:
    kube.create(JOBS, job_manifest("ok", "print('hello'); print('world')"))
    done = wait_condition(kube, "ok", "Complete")
    status = done["status"]
    assert conditions(done) == ["SuccessCriteriaMet", "Complete"]
    assert condition(done, "Complete")["reason"] == "CompletionsReached"  # type: ignore[index]
    assert status["succeeded"] == 1
    assert status.get("failed", 0) == 0
    assert status["active"] == 0
    assert status["startTime"] <= status["completionTime"]
    pod = one_pod(kube, "ok")
    meta = pod["metadata"]
    assert meta["name"].startswith("ok-")
    assert len(meta["name"]) == len("ok-") + 5
    uid = done["metadata"]["uid"]
    assert meta["labels"]["batch.kubernetes.io/job-name"] == "ok"
    assert meta["labels"]["job-name"] == "ok"
    assert meta["labels"]["batch.kubernetes.io/controller-uid"] == uid
    assert meta["labels"]["controller-uid"] == uid
    assert meta["labels"]["test"] == "ok"
    (ref,) = meta["ownerReferences"]
    assert ref == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "ok",
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert pod["spec"]["nodeName"] == "agentrun-dev-node"
    assert pod["status"]["phase"] == "Succeeded"
    term = terminated(pod)
    assert term is not None
    assert term["exitCode"] == 0
    assert term["reason"] == "Completed"
    log = kube.http.get(f"{PODS}/{meta['name']}/log").text
    assert log == "hello\nworld\n"
    stamped = kube.http.get(f"{PODS}/{meta['name']}/log", params={"timestamps": "true"}).text
    first = stamped.splitlines()[0]
    stamp, _, text = first.partition(" ")
    assert text == "hello"
    assert stamp.endswith("Z")
    assert len(stamp.split(".")[1]) == 10  # nine digits + Z (RFC3339NanoFixed)
    tail = kube.http.get(f"{PODS}/{meta['name']}/log", params={"tailLines": "1"}).text
    assert tail == "world\n"


def test_exit_code_failure_backoff_limit_and_fallback_message(kube: SyncKube) -> None:
    script = "import sys\nfor i in range(100): print(f'line {i}')\nsys.exit(3)"
    kube.create(
        JOBS,
        job_manifest(
            "bad", script, container={"terminationMessagePolicy": "FallbackToLogsOnError"}
        ),
    )
    failed = wait_condition(kube, "bad", "Failed")
    assert conditions(failed) == ["FailureTarget", "Failed"]
    ft, fl = condition(failed, "FailureTarget"), condition(failed, "Failed")
    assert ft is not None
    assert fl is not None
    assert ft["reason"] == fl["reason"] == "BackoffLimitExceeded"
    assert fl["message"] == "Job has reached the specified backoff limit"
    assert "completionTime" not in failed["status"]
    assert failed["status"]["failed"] == 1
    pod = one_pod(kube, "bad")
    assert pod["status"]["phase"] == "Failed"
    term = terminated(pod)
    assert term is not None
    assert term["exitCode"] == 3
    assert term["reason"] == "Error"
    # FallbackToLogsOnError: the last 80 lines of the log (within 2048 bytes)
    message = term["message"]
    assert message.endswith("line 99\n")
    assert "line 19\n" not in message
    assert len(message.encode()) <= 2048


def test_termination_message_file_wins_and_env_paths_are_mapped(kube: SyncKube) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "inputs"},
        "data": {"prompt": base64.b64encode(b"hello prompt\nline 2").decode()},
    }
    kube.create(f"/api/v1/namespaces/{NS}/secrets", secret)
    script = (
        "import os, sys\n"
        "p = os.environ['PROMPT_FILE']\n"
        "print(repr(open(p).read()))\n"
        "print(os.environ['POD_NAME'], os.environ['POD_NS'], os.environ['TMPDIR'] != '/tmp')\n"
        "open(os.environ['AGENTRUN_TERMINATION_MESSAGE_PATH'], 'w').write('summary: ok')\n"
        "print('HOME_SECRET' in os.environ)\n"
        "sys.exit(5)"
    )
    container = {
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": [
            {"name": "PROMPT_FILE", "value": "/var/run/agentrun/input/prompt"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "volumeMounts": [
            {"name": "input", "mountPath": "/var/run/agentrun/input", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_extra = {
        "volumes": [
            {"name": "input", "secret": {"secretName": "inputs"}},
            {"name": "tmp", "emptyDir": {}},
        ]
    }
    os.environ["HOME_SECRET"] = "must not leak"
    try:
        kube.create(JOBS, job_manifest("paths", script, container=container, pod=pod_extra))
        wait_condition(kube, "paths", "Failed")
    finally:
        del os.environ["HOME_SECRET"]
    pod = one_pod(kube, "paths")
    log = kube.http.get(f"{PODS}/{pod['metadata']['name']}/log").text.splitlines()
    assert log[0] == repr("hello prompt\nline 2")
    assert log[1] == f"{pod['metadata']['name']} {NS} True"
    assert log[2] == "False"  # the host environment is not inherited
    term = terminated(pod)
    assert term is not None
    assert term["message"] == "summary: ok"


def test_missing_secret_waits_with_config_error_then_runs(
    kube: SyncKube, cluster: ControlledCluster
) -> None:
    container = {
        "envFrom": [{"secretRef": {"name": "llm-creds"}}],
    }
    kube.create(
        JOBS,
        job_manifest(
            "creds", "import os; print(os.environ['OPENAI_API_KEY'])", container=container
        ),
    )
    pod = kube.wait_for(
        "CreateContainerConfigError",
        lambda: [
            p
            for p in pods_of(kube, "creds")
            if (waiting(p) or {}).get("reason") == "CreateContainerConfigError"
        ],
        20,
    )[0]
    assert waiting(pod)["message"] == 'secret "llm-creds" not found'  # type: ignore[index]
    assert pod["status"]["phase"] == "Pending"
    assert "Complete" not in conditions(job(kube, "creds"))
    kube.create(
        f"/api/v1/namespaces/{NS}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "llm-creds"},
            "stringData": {"OPENAI_API_KEY": "sk-test"},
        },
    )
    wait_condition(kube, "creds", "Complete", timeout=20)
    pod = one_pod(kube, "creds")
    assert kube.http.get(f"{PODS}/{pod['metadata']['name']}/log").text == "sk-test\n"


def test_missing_secret_key_message(kube: SyncKube) -> None:
    kube.create(
        f"/api/v1/namespaces/{NS}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "partial"},
            "stringData": {"A": "1"},
        },
    )
    container = {
        "env": [{"name": "B", "valueFrom": {"secretKeyRef": {"name": "partial", "key": "B"}}}]
    }
    kube.create(JOBS, job_manifest("keymiss", "print(1)", container=container))
    pod = kube.wait_for(
        "key error",
        lambda: [
            p
            for p in pods_of(kube, "keymiss")
            if waiting(p) and waiting(p)["reason"] == "CreateContainerConfigError"
        ],  # type: ignore[index]
        20,
    )[0]
    assert waiting(pod)["message"] == f"couldn't find key B in Secret {NS}/partial"  # type: ignore[index]


SIGTERM_SCRIPT = (
    "import signal, sys, time, os\n"
    "def bye(*_):\n"
    "    print('got SIGTERM', flush=True)\n"
    "    time.sleep(0.5)\n"
    "    sys.exit(143)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "print('running', flush=True)\n"
    "time.sleep(60)\n"
)


def test_deadline_failure_target_first_then_failed_after_pod_gone(kube: SyncKube) -> None:
    kube.create(
        JOBS,
        job_manifest(
            "deadline",
            SIGTERM_SCRIPT,
            activeDeadlineSeconds=1,
            pod={"terminationGracePeriodSeconds": 10},
        ),
    )
    target = wait_condition(kube, "deadline", "FailureTarget", timeout=20)
    ft = condition(target, "FailureTarget")
    assert ft is not None
    assert ft["reason"] == "DeadlineExceeded"
    assert ft["message"] == "Job was active longer than specified deadline"
    failed = wait_condition(kube, "deadline", "Failed", timeout=30)
    assert conditions(failed) == ["FailureTarget", "Failed"]
    assert condition(failed, "Failed")["reason"] == "DeadlineExceeded"  # type: ignore[index]
    # Failed only once the pod is gone
    no_pod_running(kube, "deadline")
    assert failed["status"].get("terminating", 0) == 0


def test_deadline_pod_sees_sigterm_and_failed_waits_for_it(
    kube: SyncKube, cluster: ControlledCluster
) -> None:
    script = SIGTERM_SCRIPT.replace("time.sleep(0.5)", "time.sleep(2)")
    kube.create(
        JOBS,
        job_manifest(
            "sigterm", script, activeDeadlineSeconds=4, pod={"terminationGracePeriodSeconds": 10}
        ),
    )
    pod = one_pod(kube, "sigterm")
    name = pod["metadata"]["name"]
    # the handler is installed before the deadline (4 s is generous for a python start)
    kube.wait_for(
        "the process to run", lambda: kube.http.get(f"{PODS}/{name}/log").text == "running\n", 20
    )
    assert "FailureTarget" not in conditions(job(kube, "sigterm"))
    target = wait_condition(kube, "sigterm", "FailureTarget", timeout=20)
    assert "Failed" not in conditions(target)
    # the pod is terminating (graceful deletion), the process got SIGTERM
    deleting = kube.wait_for(
        "pod deletionTimestamp",
        lambda: (
            (p := kube.get_or_none(f"{PODS}/{name}")) is not None
            and p["metadata"].get("deletionTimestamp")
            and p
        ),
        10,
    )
    assert deleting["metadata"]["deletionGracePeriodSeconds"] == 10
    kube.wait_for(
        "SIGTERM in the log",
        lambda: "got SIGTERM" in kube.http.get(f"{PODS}/{name}/log").text,
        10,
    )
    assert "Failed" not in conditions(job(kube, "sigterm"))
    failed = wait_condition(kube, "sigterm", "Failed", timeout=30)
    no_pod_running(kube, "sigterm")
    assert kube.get_or_none(f"{PODS}/{name}") is None
    assert failed["status"]["failed"] == 1


def test_sigterm_ignoring_process_is_sigkilled_after_grace(
    kube: SyncKube, cluster: ControlledCluster
) -> None:
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('stubborn', flush=True)\n"
        "time.sleep(120)\n"
    )
    kube.create(
        JOBS,
        job_manifest(
            "stubborn", script, activeDeadlineSeconds=4, pod={"terminationGracePeriodSeconds": 1}
        ),
    )
    pod = one_pod(kube, "stubborn")
    name = pod["metadata"]["name"]
    kube.wait_for(
        "SIGTERM ignored", lambda: kube.http.get(f"{PODS}/{name}/log").text == "stubborn\n", 20
    )
    pids = list(cluster.running_pids())
    assert pids
    failed = wait_condition(kube, "stubborn", "Failed", timeout=30)
    assert condition(failed, "Failed")["reason"] == "DeadlineExceeded"  # type: ignore[index]
    no_pod_running(kube, "stubborn")
    assert kube.get_or_none(f"{PODS}/{pod['metadata']['name']}") is None
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_pod_failure_policy_exit_code_fail_job(kube: SyncKube) -> None:
    policy = {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "runner", "operator": "In", "values": [11, 12]},
            },
        ]
    }
    kube.create(
        JOBS,
        job_manifest("pfp", "import sys; sys.exit(12)", backoffLimit=3, podFailurePolicy=policy),
    )
    failed = wait_condition(kube, "pfp", "Failed")
    fl = condition(failed, "Failed")
    assert fl is not None
    assert fl["reason"] == "PodFailurePolicy"
    pod = one_pod(kube, "pfp")
    assert fl["message"] == (
        f"Container runner for pod {NS}/{pod['metadata']['name']} failed with exit code 12 "
        "matching FailJob rule at index 1"
    )
    # one pod only: FailJob does not retry despite backoffLimit 3
    assert failed["status"]["failed"] == 1


def test_backoff_limit_retries_then_fails(kube: SyncKube) -> None:
    kube.create(JOBS, job_manifest("retry", "import sys; sys.exit(1)", backoffLimit=1))
    failed = wait_condition(kube, "retry", "Failed")
    assert condition(failed, "Failed")["reason"] == "BackoffLimitExceeded"  # type: ignore[index]
    assert failed["status"]["failed"] == 2
    assert len(pods_of(kube, "retry")) == 2


def test_ttl_seconds_after_finished_deletes_job_and_pods(kube: SyncKube) -> None:
    kube.create(JOBS, job_manifest("ttl", "print('bye')", ttlSecondsAfterFinished=1))
    wait_condition(kube, "ttl", "Complete")
    kube.wait_for("job deleted by ttl", lambda: job(kube, "ttl") is None, 20)
    kube.wait_for("pods deleted (Background)", lambda: pods_of(kube, "ttl") == [], 20)


def test_pod_deleted_from_under_running_job(kube: SyncKube, cluster: ControlledCluster) -> None:
    kube.create(
        JOBS, job_manifest("orphaned", SIGTERM_SCRIPT, pod={"terminationGracePeriodSeconds": 5})
    )
    pod = one_pod(kube, "orphaned")
    name = pod["metadata"]["name"]
    kube.wait_for(
        "running",
        lambda: kube.get(f"{PODS}/{name}")["status"].get("phase") == "Running",
        20,
    )
    kube.delete(f"{PODS}/{name}")
    failed = wait_condition(kube, "orphaned", "Failed", timeout=30)
    assert conditions(failed) == ["FailureTarget", "Failed"]
    assert condition(failed, "Failed")["reason"] == "BackoffLimitExceeded"  # type: ignore[index]
    no_pod_running(kube, "orphaned")  # and no replacement with backoffLimit 0
    assert kube.get_or_none(f"{PODS}/{name}") is None


def test_log_follow_streams_while_running(kube: SyncKube) -> None:
    script = (
        "import time\nfor i in range(5):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.3)\n"
    )
    kube.create(JOBS, job_manifest("follow", script))
    pod = one_pod(kube, "follow")
    name = pod["metadata"]["name"]
    kube.wait_for(
        "container started",
        lambda: (
            "running"
            in (kube.get(f"{PODS}/{name}")["status"].get("containerStatuses") or [{}])[0].get(
                "state", {}
            )
        ),
        20,
    )
    lines: list[str] = []
    with kube.http.stream("GET", f"{PODS}/{name}/log", params={"follow": "true"}, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
            if len(lines) == 1:
                # the first line arrives while the container still runs
                assert "Complete" not in conditions(job(kube, "follow"))
    assert lines == [f"tick {i}" for i in range(5)]


# ---------------------------------------------------------------------------------------------
# Faults


def test_fault_image_pull(kube: SyncKube, cluster: ControlledCluster) -> None:
    cluster.faults.add({"test": "pull"}, Fault.IMAGE_PULL)
    kube.create(JOBS, job_manifest("pull", "print(1)"))
    seen: set[str] = set()

    def both() -> bool:
        for p in pods_of(kube, "pull"):
            w = waiting(p)
            if w:
                seen.add(w["reason"])
                if w["reason"] == "ErrImagePull":
                    assert "agentrun-runner:dev" in w["message"]
                if w["reason"] == "ImagePullBackOff":
                    assert w["message"] == 'Back-off pulling image "agentrun-runner:dev"'
        return {"ErrImagePull", "ImagePullBackOff"} <= seen

    kube.wait_for("ErrImagePull then ImagePullBackOff", both, 20)
    assert pods_of(kube, "pull")[0]["status"]["phase"] == "Pending"


def test_fault_unschedulable(kube: SyncKube, cluster: ControlledCluster) -> None:
    cluster.faults.add({"test": "nosched"}, "unschedulable")
    kube.create(JOBS, job_manifest("nosched", "print(1)"))
    pod = kube.wait_for(
        "PodScheduled=False",
        lambda: [
            p
            for p in pods_of(kube, "nosched")
            if (condition(p, "PodScheduled") or {}).get("status") == "False"
        ],
        20,
    )[0]
    cond = condition(pod, "PodScheduled")
    assert cond is not None
    assert cond["reason"] == "Unschedulable"
    assert cond["message"].startswith("0/1 nodes are available")
    assert not pod["spec"].get("nodeName")
    # clearing the fault lets the scheduler place it
    cluster.faults.clear()
    wait_condition(kube, "nosched", "Complete", timeout=20)


def test_fault_evict_disruption_target_fails_job_by_policy(
    kube: SyncKube, cluster: ControlledCluster
) -> None:
    cluster.faults.add({"test": "evict"}, Fault.EVICT)
    policy = {"rules": [{"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    kube.create(
        JOBS,
        job_manifest(
            "evict",
            SIGTERM_SCRIPT,
            podFailurePolicy=policy,
            backoffLimit=2,
            pod={"terminationGracePeriodSeconds": 5},
        ),
    )
    pod = one_pod(kube, "evict")
    name = pod["metadata"]["name"]
    failed = wait_condition(kube, "evict", "Failed", timeout=30)
    fl = condition(failed, "Failed")
    assert fl is not None
    assert fl["reason"] == "PodFailurePolicy"
    assert fl["message"] == (
        f"Pod {NS}/{name} has condition DisruptionTarget matching FailJob rule at index 0"
    )
    assert conditions(failed) == ["FailureTarget", "Failed"]


def test_fault_oom_kill(kube: SyncKube, cluster: ControlledCluster) -> None:
    cluster.faults.add({"test": "oom"}, Fault.OOM_KILL, after_seconds=0.2)
    kube.create(
        JOBS, job_manifest("oom", "import time; print('eating', flush=True); time.sleep(60)")
    )
    wait_condition(kube, "oom", "Failed", timeout=30)
    pod = one_pod(kube, "oom")
    term = terminated(pod)
    assert term is not None
    assert term["reason"] == "OOMKilled"
    assert term["exitCode"] == 137


def test_faults_over_http(kube: SyncKube, cluster: ControlledCluster) -> None:
    r = kube.http.post("/_emulator/faults", json={"selector": {"a": "b"}, "fault": "oom_kill"})
    assert r.status_code == 201
    assert cluster.faults.find({"a": "b", "c": "d"}, Fault.OOM_KILL) is not None
    assert cluster.faults.find({"a": "x"}, Fault.OOM_KILL) is None
    bad = kube.http.post("/_emulator/faults", json={"selector": {"a": "b"}, "fault": "nope"})
    assert bad.status_code == 400
    assert "image_pull" in bad.json()["error"]
    bad = kube.http.post("/_emulator/faults", content=b"{not json")
    assert bad.status_code == 400
    assert len(kube.http.get("/_emulator/faults").json()["rules"]) == 1
    assert kube.http.delete("/_emulator/faults").status_code == 200
    assert cluster.faults.rules() == []


def test_missing_executable_start_error(kube: SyncKube) -> None:
    manifest = job_manifest("noexe", "")
    manifest["spec"]["template"]["spec"]["containers"][0]["command"] = ["no-such-binary-xyz"]
    kube.create(JOBS, manifest)
    wait_condition(kube, "noexe", "Failed")
    term = terminated(one_pod(kube, "noexe"))
    assert term is not None
    assert term["reason"] == "StartError"
    assert term["exitCode"] == 128
    assert 'exec: "no-such-binary-xyz": executable file not found' in term["message"]


def test_stop_kills_every_container(tmp_path: Path) -> None:
    cluster = ControlledCluster().start()
    try:
        kube = SyncKube(cluster.base_url)
        kube.create(JOBS, job_manifest("forever", "import time; time.sleep(300)"))
        pids = kube.wait_for("running", lambda: cluster.running_pids(), 20)
    finally:
        cluster.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_deleted_pod_ignoring_sigterm_lives_its_grace_then_exit_137(
    kube: SyncKube, cluster: ControlledCluster
) -> None:
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('stubborn', flush=True)\n"
        "time.sleep(120)\n"
    )
    # a finalizer holds the object after the kubelet's final delete, so its last status shows
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stubborn-pod", "finalizers": ["agentrun.test/hold"]},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "c", "image": "x", "command": ["python", "-c", script]}],
        },
    }
    kube.create(PODS, pod)
    kube.wait_for(
        "SIGTERM ignored",
        lambda: kube.http.get(f"{PODS}/stubborn-pod/log").text == "stubborn\n",
        20,
    )
    pids = list(cluster.running_pids())
    assert pids
    started = time.monotonic()
    kube.delete(f"{PODS}/stubborn-pod")
    final = kube.wait_for(
        "terminated state",
        lambda: (p := kube.get(f"{PODS}/stubborn-pod")) and terminated(p) and p,
        30,
    )
    lived = time.monotonic() - started
    assert lived >= 1.5  # it ignored SIGTERM: only SIGKILL after the 2 s grace ended it
    term = terminated(final)
    assert term is not None
    assert term["exitCode"] == 137
    assert term["reason"] == "Error"
    assert final["status"]["phase"] == "Failed"
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    kube.merge_patch(f"{PODS}/stubborn-pod", {"metadata": {"finalizers": []}})
    kube.wait_for("pod gone", lambda: kube.get_or_none(f"{PODS}/stubborn-pod") is None, 10)


def events_for(kube: SyncKube, name: str) -> list[tuple[str, str, str]]:
    return [
        (e["type"], e["reason"], e["message"])
        for e in kube.items(f"/api/v1/namespaces/{NS}/events")
        if e["involvedObject"]["name"] == name
    ]


def test_events_as_real_controllers_post_them(kube: SyncKube) -> None:
    kube.create(JOBS, job_manifest("evs", "print('x')"))
    wait_condition(kube, "evs", "Complete")
    pod = one_pod(kube, "evs")["metadata"]["name"]
    expected_job = {
        ("Normal", "SuccessfulCreate", f"Created pod: {pod}"),
        ("Normal", "Completed", "Job completed"),
    }
    kube.wait_for("job events", lambda: expected_job <= set(events_for(kube, "evs")), 10)
    expected_pod = {
        ("Normal", "Scheduled", f"Successfully assigned {NS}/{pod} to agentrun-dev-node"),
        ("Normal", "Pulled", 'Container image "agentrun-runner:dev" already present on machine'),
        ("Normal", "Created", "Created container: runner"),
        ("Normal", "Started", "Started container runner"),
    }
    kube.wait_for("pod events", lambda: expected_pod <= set(events_for(kube, pod)), 10)

    container = {"envFrom": [{"secretRef": {"name": "absent"}}]}
    kube.create(JOBS, job_manifest("evs-missing", "print(1)", container=container))
    missing = one_pod(kube, "evs-missing")["metadata"]["name"]
    kube.wait_for(
        "config error event",
        lambda: (
            ("Warning", "Failed", 'Error: secret "absent" not found') in events_for(kube, missing)
        ),
        20,
    )
