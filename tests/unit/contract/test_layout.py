"""The repository root holds a folder named ``operator``; it must never shadow the standard
library's ``operator`` module, wherever pytest or Python is started from."""

from __future__ import annotations

import operator
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_operator_folder_is_not_a_package() -> None:
    assert not (REPO / "operator" / "__init__.py").exists()
    assert not list((REPO / "operator").glob("*.py")), "loose modules in operator/ become imports"


def test_import_operator_is_the_standard_library() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(operator.__file__).resolve().parent == stdlib
    assert operator.itemgetter(1)([0, 1]) == 1


def test_import_operator_from_the_repo_root_is_the_standard_library() -> None:
    # `python -c` puts the current directory first on sys.path: the worst case.
    out = subprocess.run(
        [sys.executable, "-c", "import operator, agentrun_operator; print(operator.__file__)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(out.stdout.strip()).resolve().parent == stdlib
