"""runner-image/constraints.txt pins the runner image's whole installed set.

The image runs `pip install --constraint constraints.txt "agentrun-*.whl[runner]"`; a package of
that install left out of the constraints is installed at whatever version is newest on build day.
This resolves `agentrun[runner]` the way pip does, offline: from the requirement metadata of the
distributions installed here (tools/test installs `.[test,runner]` with the same constraints, on
Linux and Python 3.11 like the image), following extras (`httpx[http2]` brings h2) and evaluating
markers. With every version pinned, each package's dependencies are fixed by its pinned metadata,
so this closure is exactly the set the image's pip resolves; it needs no network and no build.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

REPO = Path(__file__).resolve().parents[3]
CONSTRAINTS = REPO / "runner-image" / "constraints.txt"


def pinned_versions(text: str) -> dict[NormalizedName, str]:
    """`name==version` lines of a constraints file, by normalized name."""
    pins: dict[NormalizedName, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints.txt: {raw!r} is not an exact pin (name==version)"
        pins[canonicalize_name(name)] = version.strip()
    return pins


def runner_requirements() -> list[Requirement]:
    """What `pip install "agentrun[runner]"` asks for: the base dependencies and the extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [
        Requirement(text)
        for text in [*project["dependencies"], *project["optional-dependencies"]["runner"]]
    ]


def installed_closure(roots: list[Requirement]) -> dict[NormalizedName, str]:
    """Every distribution the roots pull in, with the installed version, extras followed.

    A requirement whose marker is false here (another platform or Python) is not followed;
    a required distribution that is not installed is an error naming it.
    """
    extras_seen: dict[NormalizedName, set[str]] = {}
    versions: dict[NormalizedName, str] = {}
    pending = [(requirement.name, set(requirement.extras)) for requirement in roots]
    while pending:
        name, extras = pending.pop()
        key = canonicalize_name(name)
        seen = extras_seen.get(key)
        if seen is not None and extras <= seen:
            continue
        active = (seen or set()) | extras
        extras_seen[key] = active
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as missing:
            raise AssertionError(
                f"{name} is required by agentrun[runner] but not installed: run ./tools/test"
            ) from missing
        versions[key] = distribution.version
        environments = [{"extra": extra} for extra in sorted(active)] or [{"extra": ""}]
        for text in distribution.requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate(env) for env in environments):
                pending.append((requirement.name, set(requirement.extras)))
    return versions


def test_closure_follows_extras() -> None:
    """The resolver walk itself: an extra's dependencies are part of the closure."""
    plain = installed_closure([Requirement("httpx")])
    with_http2 = installed_closure([Requirement("httpx[http2]")])
    assert "h2" not in plain
    assert {"h2", "hpack", "hyperframe"} <= set(with_http2)


def test_every_installed_package_of_the_runner_extra_is_pinned() -> None:
    pins = pinned_versions(CONSTRAINTS.read_text())
    closure = installed_closure(runner_requirements())
    unpinned = sorted(f"{name}=={version}" for name, version in closure.items() if name not in pins)
    assert not unpinned, (
        "runner-image/constraints.txt misses packages the runner image installs; add: "
        + ", ".join(unpinned)
    )


def test_pins_are_the_versions_installed_and_none_is_stale() -> None:
    pins = pinned_versions(CONSTRAINTS.read_text())
    closure = installed_closure(runner_requirements())
    differing = sorted(
        f"{name}: pinned {pins[name]}, installed {version}"
        for name, version in closure.items()
        if name in pins and pins[name] != version
    )
    assert not differing, "tests ran other versions than the image pins: " + "; ".join(differing)
    stale = sorted(set(pins) - set(closure))
    assert not stale, f"constraints.txt pins packages agentrun[runner] no longer installs: {stale}"
