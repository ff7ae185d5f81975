"""Every `apt-get install pkg=version` pin in every Dockerfile exists in its base image's Debian
suite, checked without Docker: the pins are read from the Dockerfiles and looked up in the
suite's Packages index on the Debian mirror this machine's apt uses (deb.debian.org when apt
names none).

A pin that is not in the index makes `docker build` fail at `apt-get install` (bookworm ships
tini 0.19.0-1+b3, so `tini=0.19.0-1` broke both images). The image's apt reads `<suite>`,
`<suite>-updates` and `<suite>-security`, main component; a pin must be in one of them for
amd64 and arm64 (kind on Apple silicon builds arm64). A mirror that cannot be read fails the
test, naming the URL: CI reaches the Debian mirror, so a silent skip would hide a broken build.
"""

from __future__ import annotations

import fnmatch
import functools
import lzma
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from chart_manifests import REPO

ARCHITECTURES = ("amd64", "arm64")
DEBIAN_CODENAMES = ("buster", "bullseye", "bookworm", "trixie", "forky")
DEFAULT_MIRRORS = {
    "": "http://deb.debian.org/debian",
    "-security": "http://deb.debian.org/debian-security",
}
APT_SOURCES = Path("/etc/apt")


@dataclass(frozen=True)
class AptPin:
    dockerfile: str
    stage: str
    suite: str
    package: str
    version: str


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comment lines dropped."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    if current.strip():
        logical.append(current.strip())
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.split(None, 1) for line in logical)
    ]


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value
    )


def _suite_of(image: str) -> str | None:
    tag = image.rsplit("/", 1)[-1]
    for token in re.split(r"[-:.@]", tag):
        if token in DEBIAN_CODENAMES:
            return token
    return None


def apt_pins(dockerfile: str, text: str) -> list[AptPin]:
    """The `name=version` arguments of apt-get/apt install in each stage, with the stage's suite
    (from its base image's tag, through ARG defaults and earlier stages)."""
    args: dict[str, str] = {}
    stage_suites: dict[str, str] = {}
    stage, suite = "", ""
    pins: list[AptPin] = []
    for instruction, rest in _instructions(text):
        if instruction == "ARG":
            name, _, default = rest.partition("=")
            if default:
                args.setdefault(name.strip(), default.strip().strip('"'))
        elif instruction == "FROM":
            words = [word for word in rest.split() if not word.startswith("--")]
            image = _substitute(words[0], args)
            stage = words[2] if len(words) >= 3 and words[1].upper() == "AS" else image
            found = stage_suites.get(image) or _suite_of(image)
            assert found, f"{dockerfile}: cannot tell the Debian suite of base image {image!r}"
            suite = stage_suites[stage] = found
        elif instruction == "RUN":
            for command in re.split(r"&&|\|\||;|\|", rest):
                words = command.split()
                for index in range(len(words) - 1):
                    if words[index] in ("apt-get", "apt") and "install" in words[index + 1 :]:
                        after = words[words.index("install", index) + 1 :]
                        for word in after:
                            if word.startswith("-") or "=" not in word:
                                continue
                            package, _, version = word.partition("=")
                            pins.append(AptPin(dockerfile, stage, suite, package, version))
                        break
    return pins


def dockerfiles() -> list[Path]:
    skip = {"node_modules", ".git", ".tools"}
    return sorted(
        path
        for path in REPO.rglob("*Dockerfile*")
        if path.is_file()
        and not path.name.endswith(".dockerignore")
        and not any(part in skip or part.endswith(".egg-info") for part in path.parts)
    )


def _configured_mirror(suite: str) -> str | None:
    """The http(s) URI apt's sources give for `suite` (one-line and deb822 formats)."""
    sources = [APT_SOURCES / "sources.list", *sorted((APT_SOURCES / "sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for block in re.split(r"\n\s*\n", text):
                fields = dict(
                    (key.strip().lower(), value.strip())
                    for key, _, value in (
                        line.partition(":")
                        for line in block.splitlines()
                        if ":" in line and not line.startswith("#")
                    )
                )
                if (
                    "deb" in fields.get("types", "").split()
                    and suite in fields.get("suites", "").split()
                ):
                    for uri in fields.get("uris", "").split():
                        if uri.startswith(("http://", "https://")):
                            return uri.rstrip("/")
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line).split()
                if (
                    len(words) >= 3
                    and words[0] == "deb"
                    and words[2] == suite
                    and words[1].startswith(("http://", "https://"))
                ):
                    return words[1].rstrip("/")
    return None


@functools.cache
def packages_index(suite: str, architecture: str) -> dict[str, frozenset[str]]:
    """Package name -> versions in `suite` main for `architecture` (updates and security too)."""
    versions: dict[str, set[str]] = {}
    for suffix in ("", "-updates", "-security"):
        name = suite + suffix
        mirror = (
            _configured_mirror(name)
            or DEFAULT_MIRRORS["-security" if suffix == "-security" else ""]
        )
        url = f"{mirror}/dists/{name}/main/binary-{architecture}/Packages.xz"
        try:
            with urllib.request.urlopen(url, timeout=120) as response:
                text = lzma.decompress(response.read()).decode("utf-8", errors="replace")
        except (urllib.error.URLError, OSError, lzma.LZMAError) as error:
            pytest.fail(
                f"cannot read the Debian Packages index {url}: {error}. This check needs the "
                "Debian mirror (CI reaches it); the apt pins in the Dockerfiles are unverified",
                pytrace=False,
            )
        package = ""
        for line in text.splitlines():
            if line.startswith("Package: "):
                package = line[len("Package: ") :].strip()
            elif line.startswith("Version: ") and package:
                versions.setdefault(package, set()).add(line[len("Version: ") :].strip())
    return {package: frozenset(found) for package, found in versions.items()}


def missing_pins(
    pins: list[AptPin], index: dict[tuple[str, str], dict[str, frozenset[str]]]
) -> list[str]:
    """Each pin absent from its suite for some architecture, with the versions that exist."""
    problems = []
    for pin in pins:
        for architecture in ARCHITECTURES:
            available = index[(pin.suite, architecture)].get(pin.package, frozenset())
            if not any(fnmatch.fnmatchcase(version, pin.version) for version in available):
                problems.append(
                    f"{pin.dockerfile} (stage {pin.stage}): {pin.package}={pin.version} is not in "
                    f"Debian {pin.suite} for {architecture}; it has {sorted(available) or 'no such package'}"
                )
    return problems


def test_the_parser_reads_pins_per_stage_with_the_suite_of_the_base_image() -> None:
    text = (
        "ARG BASE=python:3.11.11-slim-bookworm\n"
        "FROM ${BASE} AS base\n"
        "# apt-get install -y commented=1\n"
        "RUN apt-get update \\\n"
        "    && apt-get install -y --no-install-recommends tini=0.19.0-1 curl \\\n"
        "    && rm -rf /var/lib/apt/lists/*\n"
        "FROM base AS final\n"
        "RUN apt install -y jq=1.6-2.1 && echo a=b\n"
    )
    pins = apt_pins("Dockerfile", text)
    assert pins == [
        AptPin("Dockerfile", "base", "bookworm", "tini", "0.19.0-1"),
        AptPin("Dockerfile", "final", "bookworm", "jq", "1.6-2.1"),
    ]
    index = {
        ("bookworm", architecture): {
            "tini": frozenset({"0.19.0-1+b3"}),
            "jq": frozenset({"1.6-2.1"}),
        }
        for architecture in ARCHITECTURES
    }
    problems = missing_pins(pins, index)
    assert len(problems) == len(ARCHITECTURES)
    assert all(
        "tini=0.19.0-1 is not in Debian bookworm" in p and "0.19.0-1+b3" in p for p in problems
    )


def test_every_dockerfile_with_apt_installs_is_found_and_parsed() -> None:
    found = {str(path.relative_to(REPO)) for path in dockerfiles()}
    assert {"runner-image/Dockerfile", "deploy/docker/Dockerfile"} <= found
    for path in dockerfiles():
        text = path.read_text()
        if re.search(r"\bapt(-get)? .*install", text):
            assert apt_pins(str(path.relative_to(REPO)), text), (
                f"{path}: apt installs, no pins read"
            )


@pytest.mark.parametrize(
    "dockerfile", dockerfiles(), ids=[str(path.relative_to(REPO)) for path in dockerfiles()]
)
def test_every_apt_pin_exists_in_the_base_images_debian_suite(dockerfile: Path) -> None:
    relative = str(dockerfile.relative_to(REPO))
    pins = apt_pins(relative, dockerfile.read_text())
    index = {
        (suite, architecture): packages_index(suite, architecture)
        for suite in {pin.suite for pin in pins}
        for architecture in ARCHITECTURES
    }
    problems = missing_pins(pins, index)
    assert not problems, "\n".join(problems)
