"""The ``agentrun`` command line."""
