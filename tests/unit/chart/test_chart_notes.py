"""NOTES.txt (rendered by a client-side dry-run install): port-forward to 8005, how to get a
token, and the seed's curl with the token added."""

from __future__ import annotations

from chart_manifests import CHART, FULLNAME, NAMESPACE, RELEASE, run_helm


def notes(helm: str, *sets: str) -> str:
    args = ["install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client"]
    for item in sets:
        args += ["--set", item]
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, proc.stderr
    assert "NOTES:" in proc.stdout
    return proc.stdout.split("NOTES:", 1)[1]


def test_notes_default(helm: str) -> None:
    text = notes(helm)
    assert f"kubectl -n {NAMESPACE} port-forward svc/{FULLNAME}-api 8005:8005" in text
    assert f"get secret {FULLNAME}-api-tokens" in text
    assert "{.data.default}" in text
    assert '"prompt": "Analyze the quarterly sales data"' in text
    assert '-H "Idempotency-Key: unique-key-123"' in text
    assert '-H "Authorization: Bearer $AGENTRUN_TOKEN"' in text
    assert "create secret generic agentrun-llm-credentials" in text


def test_notes_existing_secret_and_auth_off(helm: str) -> None:
    assert "get secret my-tokens" in notes(helm, "auth.existingSecret=my-tokens")
    off = notes(helm, "auth.enabled=false")
    assert "Auth is OFF" in off
    assert "api-tokens" not in off
