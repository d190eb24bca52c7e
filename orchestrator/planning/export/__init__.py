"""A deployment as files for another engine: Compose, a Swarm stack, or Kubernetes manifests.

Pure: the pods come from `initial_pods`, so an export runs the same images, commands,
users and limits as `Deployment.start()`. What the orchestrator does at run time is
replaced by static configuration:
- the head gets its workers as `--worker SHARD=HOST:PORT` arguments instead of control RPCs;
- on Kubernetes, each shard is a StatefulSet behind a headless Service, so every replica
  has a stable DNS name for the head to dial (`NAME-s0-1.NAME-s0:50051`), and a replaced
  replica comes back under the same name;
- on Swarm, each pod is a one-task service reached by its name on an overlay network
  (endpoint_mode dnsrr: the head connects to the task itself, not to a virtual IP), and
  Swarm's own start-first updates, gated by the image's health probe, replace a task;
- an executor given as a local file travels in a ConfigMap (Kubernetes) or a Swarm config,
  or is bind-mounted from the same host path (Compose).

One module per target (compose, swarm, kubernetes), and common for what they share.
"""

from orchestrator.planning.export.common import TOKEN_VARIABLE
from orchestrator.planning.export.compose import to_compose
from orchestrator.planning.export.kubernetes import K8S_TOKEN_DIR, to_kubernetes
from orchestrator.planning.export.swarm import (
    SWARM_HEALTHCHECK,
    SWARM_TOKEN_TARGET,
    swarm_secret_name,
    to_swarm,
)

__all__ = [
    "K8S_TOKEN_DIR",
    "SWARM_HEALTHCHECK",
    "SWARM_TOKEN_TARGET",
    "TOKEN_VARIABLE",
    "swarm_secret_name",
    "to_compose",
    "to_kubernetes",
    "to_swarm",
]
