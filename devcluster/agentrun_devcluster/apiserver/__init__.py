"""An in-memory Kubernetes API server over real HTTP, for CI and laptops (``agentrun dev``).

kopf, kubernetes_asyncio and kubectl treat it as a real one for everything this project uses:
discovery, CRUD, list/watch with selectors, patches, /status isolation, finalizers, garbage
collection, CRD schemas (pruning, defaulting, validation, CEL), builtin strategies (Job, Pod,
Secret), size limits, server-side printing and pod logs. See ``server.EmulatedAPIServer``;
``python -m agentrun_devcluster.apiserver`` serves one alone.

Modules: ``state`` (storage and API semantics, no HTTP), ``server`` (aiohttp routing),
``resources`` (resource types, discovery), ``schema``/``cel``/``builtins``/``limits``
(admission), ``patching``, ``selectors``, ``printing`` (Tables), ``logs`` (pods/log and the
:class:`PodLogProvider` interface), ``errors`` (Status bodies), ``faults`` (what a real control
plane throws at its clients: cut and ended log follows, dropped and half-open connections, 429
and 500 on writes, restarts, compactions; ``server.faults``, ``server.restart()``,
``server.compact()``, ``server.start_chaos()``).

Known differences from a real apiserver (none of them used by this project):

- no authentication/authorization (any bearer token is accepted), no admission webhooks, no
  protobuf (415: typed kubectl commands such as ``kubectl create namespace`` need
  ``kubectl create -f``), an empty OpenAPI v2 document (kubectl skips client-side
  validation), no aggregated discovery (kubectl falls back to the legacy documents); ``dryRun=All``
  is honoured, but a dry-run answer carries no new resourceVersion;
- server-side apply (``application/apply-patch+yaml``) is a merge patch on an existing object;
- strategic merge patch merges lists by key only for a fixed set of well-known fields;
- list pages are not snapshots: ``continue`` resumes after the last key in the current state,
  and continue tokens never expire; every page reports the first page's resourceVersion, so a
  watch from it still sees each change made meanwhile;
- deleting a namespace deletes its objects at once (no Terminating phase, finalizers ignored);
- pod spec updates are not restricted (the fake kubelet binds with a patch of spec.nodeName);
- one served version per CRD group/plural (no conversion); no validation ratcheting;
- core/v1 and events.k8s.io/v1 Events are separate stores;
- CEL rules outside a common subset run on cel-python, whose equality is the older strict one.
"""

from .logs import PodLogProvider
from .server import EmulatedAPIServer

__all__ = ["EmulatedAPIServer", "PodLogProvider"]
