"""The repository speaks of itself only, its README's links lead somewhere, and the dev
cluster's modules import each other without a circle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
SOURCE_DIRS = (
    "contract",
    "api",
    "operator",
    "runner-image",
    "devcluster",
    "webhooks",
    "cli",
    "kube",
)
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".tpl", ".txt", ".toml"}
# How the code came to be (who wrote which part) is not something a reader of it needs.
AUTHORSHIP = re.compile(r"\b(?:helper|subagent)\s+[A-Z]\b|\bwritten by (?:a |the )?helper", re.I)


def _project_text_files() -> list[Path]:
    roots = [REPO_ROOT / d for d in (*SOURCE_DIRS, "tests", "bench", "charts", "deploy", "tools")]
    files = [p for root in roots for p in root.rglob("*") if p.suffix in TEXT_SUFFIXES]
    files += [REPO_ROOT / "README.md", REPO_ROOT / "pyproject.toml"]
    return [p for p in files if p.is_file() and "node_modules" not in p.parts]


def test_no_text_describes_how_the_code_was_written() -> None:
    this = Path(__file__).resolve()
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in _project_text_files()
        if path.resolve() != this
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if AUTHORSHIP.search(line)
    ]
    assert offenders == [], "reword these to say what the code is:\n" + "\n".join(offenders)


MARKDOWN_LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")


@pytest.mark.parametrize(
    "document",
    [
        "README.md",
        "charts/agentrun/README.md",
        "operator/README.md",
        "runner-image/README.md",
        "webhooks/README.md",
        "deploy/README.md",
    ],
)
def test_markdown_links_lead_somewhere(document: str) -> None:
    """Every link is an absolute http(s) URL, an anchor, or a file inside the repository."""
    path = REPO_ROOT / document
    broken = []
    for target in MARKDOWN_LINK.findall(path.read_text()):
        if target.startswith(("https://", "http://", "#", "mailto:")):
            continue
        local = (path.parent / target.split("#", 1)[0]).resolve()
        if not local.is_relative_to(REPO_ROOT) or not local.exists():
            broken.append(target)
    assert broken == [], f"{document}: links to nothing in the repository: {broken}"


def _imports_of(path: Path, package: str) -> set[str]:
    """Modules of ``package`` that ``path`` imports anywhere (top level or inside functions)."""
    tree = ast.parse(path.read_text())
    own = f"{package}.{path.stem}" if path.stem != "__init__" else package
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(package))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own.rsplit(".", node.level)[0] if path.stem != "__init__" else own
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module.startswith(package):
                found.add(module)
                found.update(f"{module}.{a.name}" for a in node.names)
    return found


def test_dev_cluster_modules_import_without_a_circle() -> None:
    """``agentrun_devcluster``'s modules form no import cycle (lazy imports count too)."""
    package = "agentrun_devcluster"
    root = REPO_ROOT / "devcluster" / package
    modules = {
        f"{package}.{p.stem}": p
        for p in root.glob("*.py")
        if p.stem not in {"__init__", "__main__"}
    }
    graph = {
        name: {m for m in _imports_of(path, package) if m in modules and m != name}
        for name, path in modules.items()
    }

    def cycle_from(start: str) -> list[str] | None:
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*trail, start]
                if nxt not in trail:
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [c for name in sorted(graph) if (c := cycle_from(name))]
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
