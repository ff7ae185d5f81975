"""The install instructions are correct to the letter: every `--set` key they use exists in
values.yaml, and every object they name exists in the chart rendered as they install it."""

from __future__ import annotations

import re
from typing import Any

import yaml
from chart_manifests import CHART, REPO, helm_template

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
DOCS = [
    CHART / "README.md",
    CHART / "templates" / "NOTES.txt",
    REPO / "deploy" / "kind" / "up",
    REPO / "tests" / "e2e" / "test_e2e_chart.py",
]
SET_KEY = re.compile(r"--set(?:-json)?[ =]'?\"?([A-Za-z][A-Za-z0-9.\[\]]*)=")
E2E_SET_KEY = re.compile(r'"--set", f?"([A-Za-z][A-Za-z0-9.]*)=')


def has_key(dotted: str) -> bool:
    node: Any = VALUES
    for part in re.sub(r"\[\d+\]", "", dotted).split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_every_set_key_in_the_docs_exists() -> None:
    seen = 0
    for doc in DOCS:
        text = doc.read_text()
        keys = SET_KEY.findall(text) + E2E_SET_KEY.findall(text)
        seen += len(keys)
        unknown = [k for k in keys if not has_key(k)]
        assert not unknown, f"{doc.relative_to(REPO)} sets unknown values {unknown}"
    assert seen > 20


def test_readme_install_names_objects_the_chart_creates(helm: str) -> None:
    """The README installs release `agentrun` in namespace `agentrun` with an existing tokens
    Secret; every deploy/svc it names must exist in that render."""
    readme = (CHART / "README.md").read_text()
    section = readme.split("## Install on a real cluster", 1)[1].split("\n## ", 1)[0]
    docs = helm_template(
        helm,
        namespace="agentrun",
        sets=("auth.existingSecret=agentrun-api-tokens",),
        release="agentrun",
    )
    rendered = {(d["kind"], d["metadata"]["name"]) for d in docs}
    kinds = {"deploy": "Deployment", "svc": "Service"}
    named = re.findall(r"(?<=[\s`])(deploy|svc)/([a-z0-9-]+)(?![/\w])", section)
    assert len(named) >= 3
    for short, name in named:
        assert (kinds[short], name) in rendered, f"README names {short}/{name}, not in the chart"
    assert "agentrun-llm-credentials" in section
    assert VALUES["llm"]["credentialsSecret"] == "agentrun-llm-credentials"
    for script in ("deploy/docker/Dockerfile", "runner-image/Dockerfile"):
        assert script in section
        assert (REPO / script).is_file()
