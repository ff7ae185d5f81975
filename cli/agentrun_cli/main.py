"""``agentrun``: one console script for every process of the system.

Subcommands import their component lazily, so ``agentrun api`` never imports kopf and
``agentrun operator`` never imports Litestar.

- ``agentrun api``: the HTTP API (settings: AGENTRUN_API_* env vars, see agentrun_api.settings)
- ``agentrun operator``: the kopf operator (AGENTRUN_OPERATOR_*, see agentrun_operator.settings)
- ``agentrun dev``: emulated cluster + operator + API on 127.0.0.1:8005, no Kubernetes needed
- ``agentrun crd [PATH|-]``: regenerate deploy/crds/agentrun.dev.yaml from the typed models
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

Command = Callable[[argparse.Namespace], int]


def _cmd_api(args: argparse.Namespace) -> int:
    from agentrun_api.main import run_api

    if args.workers is not None:
        # Through the environment, so the settings object (and every spawned worker) reads it.
        os.environ["AGENTRUN_API_WORKERS"] = str(args.workers)
    return run_api()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _cmd_operator(args: argparse.Namespace) -> int:
    from agentrun_operator.main import run_operator

    return run_operator()


def _cmd_dev(args: argparse.Namespace) -> int:
    from agentrun_devcluster.dev import run_dev

    return run_dev(args)


def _cmd_crd(args: argparse.Namespace) -> int:
    from agentrun_contract.crd import main as crd_main

    return crd_main([args.path] if args.path else [])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentrun",
        description="Run long-running AI agent tasks as Kubernetes Jobs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("api", help="serve the HTTP API (port 8005)")
    p.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="HTTP server processes sharing the port (default: AGENTRUN_API_WORKERS, else 1)",
    )
    p.set_defaults(func=_cmd_api)

    p = sub.add_parser("operator", help="run the operator")
    p.set_defaults(func=_cmd_operator)

    p = sub.add_parser(
        "dev",
        help="run the whole system on an embedded, emulated Kubernetes cluster",
        description="Start the emulated Kubernetes API, the fake Job controller and kubelet, the "
        "operator and the API. Runs execute the real runner as local processes.",
    )
    from agentrun_cli.dev_args import add_dev_arguments

    add_dev_arguments(p)
    p.set_defaults(func=_cmd_dev)

    p = sub.add_parser(
        "crd", help="write the generated CRDs (default deploy/crds/agentrun.dev.yaml)"
    )
    p.add_argument("path", nargs="?", help="output file, or - for stdout")
    p.set_defaults(func=_cmd_crd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
