"""agentrun_runner."""
