"""agentrun_webhooks: the completion webhook, with no Kubernetes or kopf dependency.

- :mod:`.policy`: which URLs may be targets (SSRF), used by the API at submit and the operator
  before every attempt (``WebhookPolicySettings``, ``check_webhook_url``).
- :mod:`.settings`: delivery settings (``WebhookDeliverySettings``).
- :mod:`.payload`: the JSON body (``build_webhook_payload``).
- :mod:`.signing`: Standard Webhooks headers (``sign_headers``, ``load_signing_secrets``).
- :mod:`.delivery`: one attempt (``attempt_delivery``) and the pure retry plan
  (``plan_after_attempt``).
- :mod:`.receiver`: a verifying receiver for tests and local use (needs aiohttp).

The operator's side (kopf handlers, durable state) is ``agentrun_operator.webhook_handlers``.
"""
