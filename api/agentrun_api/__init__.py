"""agentrun_api."""
