"""agentrun_webhooks."""
