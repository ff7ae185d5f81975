"""agentrun_devcluster."""
