"""The agentrun contract: the one definition shared by the API, the operator, the runner and the
dev cluster.

Data only. Nothing in this package imports kopf, Litestar or a Kubernetes client, so every
component (the runner image included) can import it cheaply.

- :mod:`agentrun_contract.limits`: the fixed bounds of the product contract.
- :mod:`agentrun_contract.resource`: the AgentRun (and its owned objects') typed models: the single
  source of truth for the CRDs.
- :mod:`agentrun_contract.names`: names, labels, annotations and id derivation.
- :mod:`agentrun_contract.runner`: the runner interface (env vars, paths, exit codes, stdout events).
- :mod:`agentrun_contract.stream`: the transcript / SSE event schema.
- :mod:`agentrun_contract.crd`: CRD generation from the models.
"""
