from __future__ import annotations

import httpx


def test_submit_then_get(http: httpx.Client) -> None:
    response = http.post("/api/v1/runs", json={"prompt": "hello"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    got = http.get(f"/api/v1/runs/{body['job_id']}")
    assert got.status_code == 200, got.text
    assert got.json()["queue_position"] == 1
