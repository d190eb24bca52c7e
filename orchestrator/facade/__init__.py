"""The pieces of the `Deployment` facade, one concern each: Jina's Namespace views,
updates and the rollout history, healing and live reload, requests. Each piece only
delegates (to `control/`, `pod_args`, the client); `orchestrator.deployment.Deployment`
combines them with the lifecycle (start, close, attach)."""
