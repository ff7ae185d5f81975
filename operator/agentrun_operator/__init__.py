"""agentrun_operator."""
