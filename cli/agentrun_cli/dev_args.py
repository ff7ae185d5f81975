"""Arguments of ``agentrun dev`` (kept apart so the parser needs no dev-cluster import)."""

from __future__ import annotations

import argparse


def add_dev_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="API bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8005, help="API port (default 8005)")
    p.add_argument(
        "--stub-llm",
        action="store_true",
        help="start a local OpenAI-compatible stub LLM (deterministic answers) and point runs at it",
    )
    p.add_argument(
        "--runner",
        choices=["praisonai", "tiny"],
        default="praisonai",
        help="runner command: the real PraisonAI runner (default) or the tiny test runner",
    )
    p.add_argument(
        "--kubeconfig",
        default=None,
        help="where to write the emulated cluster's kubeconfig (default .agentrun-dev/kubeconfig)",
    )
    p.add_argument("--namespace", default="default", help="namespace to serve (default: default)")
    p.add_argument(
        "--state-dir",
        default=".agentrun-dev",
        help="directory for the kubeconfig, pod scratch space and logs",
    )
    p.add_argument(
        "--faults",
        default=None,
        metavar="LIST",
        help="make the emulated apiserver throw faults at random to the operator and the API: "
        "comma-separated from log_cut, log_disconnect, drop, hang, stall, throttle, server_error, "
        "restart, compact, or all (the seed is printed)",
    )
    p.add_argument(
        "--fault-rate",
        type=float,
        default=0.02,
        help="with --faults: the fraction of requests that get a fault (default 0.02)",
    )
    p.add_argument(
        "--fault-interval",
        type=float,
        default=20.0,
        help="with --faults: mean seconds between apiserver restarts/compactions (default 20)",
    )
    p.add_argument(
        "--fault-seed",
        type=int,
        default=None,
        help="with --faults: replay the random choices of an earlier seed",
    )
