"""Serve the emulated apiserver alone: ``python -m agentrun_devcluster.apiserver``.

Prints ``EMULATED_APISERVER_URL=<url>`` once listening (for scripts and benchmarks), writes a
kubeconfig if asked, installs CRD files if given, and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from .server import EmulatedAPIServer


async def serve(args: argparse.Namespace) -> None:
    server = EmulatedAPIServer(host=args.host, port=args.port, watch_window=args.watch_window)
    url = await server.start()
    try:
        for crd_file in args.crds:
            await server.apply_crds_from_file(crd_file)
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig)
        print(f"EMULATED_APISERVER_URL={url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--watch-window", type=int, default=10_000)
    parser.add_argument("--crds", type=Path, action="append", default=[], help="CRD YAML file")
    parser.add_argument("--kubeconfig", type=Path, default=None, help="write a kubeconfig here")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
