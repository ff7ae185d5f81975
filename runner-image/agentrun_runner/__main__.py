"""``python -m agentrun_runner``: the same as the ``agentrun-runner`` console script."""

from agentrun_runner.main import main

main()
