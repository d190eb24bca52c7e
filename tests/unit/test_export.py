"""`orchestrator export`: Compose, Swarm and Kubernetes documents from a spec (pure); the
Kubernetes ones checked against the API's own schemas by kubernetes-validate, the Swarm
stack against the stack schema of the docker CLI (`docker stack config`, client side)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from orchestrator.cli import main
from orchestrator.errors import SpecError
from orchestrator.planning.export import to_compose, to_kubernetes, to_swarm
from orchestrator.planning.pods import PodContext
from orchestrator.spec import DeploymentSpec

ROOT = Path(__file__).resolve().parents[2]
ECHO = str(ROOT / "executors" / "echo.py")
CTX = PodContext(owner="export", token="s3cret")
K8S_VERSION = "1.30.0"


def spec(**fields: Any) -> DeploymentSpec:
    base: dict[str, Any] = {"name": "shop", "uses": f"{ECHO}:Echo", "replicas": 3,
                            "shards": 2, "uses_with": {"tag": "v7"}}
    return DeploymentSpec.from_fields(**{**base, **fields})


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def sources() -> dict[str, str]:
    return {ECHO: Path(ECHO).read_text()}


def test_every_kubernetes_document_is_valid_for_the_api() -> None:
    docs = to_kubernetes(spec(uses_before=f"{ECHO}:Echo", uses_after=f"{ECHO}:Echo",
                              cpus=0.5, memory="256m"), CTX, sources())
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Secret", "ConfigMap", "ConfigMap", "ConfigMap",
                            "Deployment", "Service", "Deployment", "Service",
                            "Deployment", "Service", "Service", "StatefulSet",
                            "Service", "StatefulSet"])


def test_kubernetes_shards_are_stateful_sets_the_head_dials_by_name() -> None:
    docs = to_kubernetes(spec(), CTX, sources())
    sets, services = by_kind(docs, "StatefulSet"), by_kind(docs, "Service")
    assert sorted(sets) == ["shop-s0", "shop-s1"]
    for shard, name in enumerate(sorted(sets)):
        sts = sets[name]["spec"]
        assert sts["replicas"] == 3 and sts["serviceName"] == name
        headless = services[name]["spec"]
        assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"]
        assert headless["selector"] == sts["selector"]["matchLabels"]
        assert sts["selector"]["matchLabels"]["orchestrator.shard"] == str(shard)
        args = sts["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--name") + 1] == "$(POD_NAME)"
        assert args[args.index("--replica-id") + 1] == "$(POD_ORDINAL)"
        assert args[args.index("--shard-id") + 1] == str(shard)
    head = by_kind(docs, "Deployment")["shop-head"]["spec"]["template"]["spec"]
    args = head["containers"][0]["args"]
    workers = [args[i + 1] for i, a in enumerate(args) if a == "--worker"]
    assert workers == [f"{s}=shop-s{s}-{r}.shop-s{s}:50051" for s in (0, 1) for r in (0, 1, 2)]
    assert services["shop-head"]["spec"]["selector"] == \
        by_kind(docs, "Deployment")["shop-head"]["spec"]["selector"]["matchLabels"]


def test_kubernetes_pods_keep_the_security_defaults_and_the_token_is_a_secret() -> None:
    docs = to_kubernetes(spec(), CTX, sources())
    templates = [d["spec"]["template"]["spec"] for d in docs
                 if d["kind"] in ("Deployment", "StatefulSet")]
    for pod in templates:
        (container,) = pod["containers"]
        sec = container["securityContext"]
        assert sec["runAsNonRoot"] and sec["runAsUser"] == 10001
        assert sec["allowPrivilegeEscalation"] is False
        assert sec["capabilities"] == {"drop": ["ALL"]}
        assert pod["automountServiceAccountToken"] is False
        assert container["readinessProbe"]["grpc"] == {"port": 50051}
        assert all("value" not in e or e["name"] != "ORCHESTRATOR_TOKEN"
                   for e in container["env"])
    head_pod = by_kind(docs, "Deployment")["shop-head"]["spec"]["template"]["spec"]
    (head,) = head_pod["containers"]
    # the token is a file from the Secret's volume, in no pod's environment
    assert not any(e["name"] == "ORCHESTRATOR_TOKEN" for e in head["env"])
    assert {"name": "ORCHESTRATOR_TOKEN_FILE",
            "value": "/run/secrets/orchestrator/token"} in head["env"]
    assert {"name": "token", "mountPath": "/run/secrets/orchestrator",
            "readOnly": True} in head["volumeMounts"]
    assert {"name": "token", "secret": {"secretName": "shop-token", "defaultMode": 0o440}
            } in head_pod["volumes"]
    assert head_pod["securityContext"] == {"fsGroup": 10001}  # the file's group: the pod's
    assert by_kind(docs, "Secret")["shop-token"]["stringData"] == {"token": "s3cret"}
    head_meta = by_kind(docs, "Deployment")["shop-head"]["spec"]["template"]["metadata"]
    assert head_meta["annotations"]["prometheus.io/port"] == "50051"
    code = by_kind(docs, "ConfigMap")["shop-worker-code"]["data"]
    assert code == {"echo.py": Path(ECHO).read_text()}  # the executor travels with it


@pytest.mark.parametrize(("fields", "field"), [
    ({"volumes": ["/srv/data:/data"]}, "volumes"),
    ({"gpus": "all"}, "gpus"),
])
def test_what_a_cluster_cannot_take_is_refused_by_field(fields: dict[str, Any],
                                                        field: str) -> None:
    with pytest.raises(SpecError) as caught:
        to_kubernetes(spec(**fields), CTX, sources())
    assert caught.value.field == field


def assert_static_workers(services: dict[str, Any]) -> None:
    """A service per pod (1 shard x 2 replicas), the workers on the head's command line."""
    assert sorted(services) == ["shop-head", "shop-s0-r0-g1", "shop-s0-r1-g1"]
    head = services["shop-head"]
    workers = [head["command"][i + 1] for i, a in enumerate(head["command"])
               if a == "--worker"]
    assert workers == ["0=shop-s0-r0-g1:50051", "0=shop-s0-r1-g1:50051"]


def test_compose_has_a_service_per_pod_and_static_workers_at_the_head() -> None:
    doc = to_compose(spec(shards=1, replicas=2), CTX)
    services = doc["services"]
    assert_static_workers(services)
    head = services["shop-head"]
    assert head["ports"] == ["127.0.0.1::50051"]
    assert head["environment"]["ORCHESTRATOR_TOKEN"].startswith("${ORCHESTRATOR_TOKEN:?")
    for name, service in services.items():
        assert service["user"] == "10001:10001" and service["cap_drop"] == ["ALL"]
        assert service["security_opt"] == ["no-new-privileges:true"]
        assert ("ports" in service) == (name == "shop-head")
    assert doc["networks"] == {"shop-net": {"name": "shop-net", "labels": {
        "orchestrator.managed": "true", "orchestrator.deployment": "shop"}}}


def test_swarm_has_a_one_task_service_per_pod_that_the_head_dials_by_name() -> None:
    doc = to_swarm(spec(shards=1, replicas=2, policy={"monitor": 3, "max_surge": 2}),
                   CTX, sources())
    services = doc["services"]
    assert_static_workers(services)
    # the token is a Swarm secret mounted as a file, in no service's environment
    assert doc["secrets"] == {"shop-token": {"external": True, "name": "shop-token"}}
    head = services["shop-head"]
    assert head["secrets"] == [{"source": "shop-token", "target": "orchestrator-token",
                                "uid": "10001", "gid": "10001", "mode": 0o400}]
    assert head["environment"]["ORCHESTRATOR_TOKEN_FILE"] == "/run/secrets/orchestrator-token"
    assert not any("ORCHESTRATOR_TOKEN" in s["environment"] for s in services.values())
    (config, body), = doc["configs"].items()
    assert body == {"name": config, "file": ECHO} and config.startswith("shop-worker-code-")
    for name, service in services.items():
        assert service["user"] == "10001:10001" and service["cap_drop"] == ["ALL"]
        assert "ports" not in service  # no `port` in the spec: reached on the network
        assert "labels" not in service  # Swarm owns the containers: `down` must not see them
        deploy = service["deploy"]
        assert deploy["replicas"] == 1 and deploy["endpoint_mode"] == "dnsrr"
        assert deploy["labels"]["orchestrator.deployment"] == "shop"
        assert deploy["update_config"] == {"parallelism": 2, "order": "start-first",
                                           "failure_action": "rollback", "monitor": "3s"}
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL" and "exec /usr/local/bin/orchestrator-probe" in test[1]
        if name != "shop-head":
            assert service["configs"] == [{"source": config, "target": "/opt/uses/echo.py",
                                           "uid": "10001", "gid": "10001", "mode": 0o444}]
    net = doc["networks"]["shop-net"]
    assert net["driver"] == "overlay" and net["attachable"] is True


def test_swarm_config_names_follow_the_executor_text() -> None:
    """Swarm configs cannot be updated in place: an edited file must get a new name."""
    first = to_swarm(spec(), CTX, sources())["configs"]
    edited = to_swarm(spec(), CTX, {ECHO: sources()[ECHO] + "\n# edited\n"})["configs"]
    assert first.keys() != edited.keys()
    assert to_swarm(spec(), CTX, sources())["configs"] == first


@pytest.mark.parametrize(("fields", "field"), [
    ({"port": 8080}, "host"),  # 127.0.0.1 by default: Swarm would publish everywhere
    ({"gpus": 1}, "gpus"),
])
def test_what_swarm_cannot_take_is_refused_by_field(fields: dict[str, Any], field: str
                                                    ) -> None:
    with pytest.raises(SpecError) as caught:
        to_swarm(spec(**fields), CTX, sources())
    assert caught.value.field == field


def test_cli_swarm_stack_passes_the_docker_cli_schema(tmp_path: Path) -> None:
    path = tmp_path / "app.yml"
    path.write_text(f"deployments:\n"
                    f"- {{name: shop, uses: '{ECHO}:Echo', replicas: 2, port: 8080, "
                    f"host: 0.0.0.0, cpus: 0.5, memory: 256m, volumes: ['/srv:/data:ro']}}\n"
                    f"- {{name: cart, uses: '{ECHO}:Echo', shards: 2, "
                    f"uses_after: '{ECHO}:Echo'}}\n")
    out = tmp_path / "stack.yml"
    assert main(["export", "-f", str(path), "--to", "swarm", "-o", str(out)]) == 0
    stack = yaml.safe_load(out.read_text())
    assert {"shop-head", "cart-head", "cart-uses-after"} <= set(stack["services"])
    assert stack["services"]["shop-head"]["ports"] == [
        {"target": 50051, "published": 8080, "protocol": "tcp", "mode": "host"}]
    assert sorted(stack["networks"]) == ["cart-net", "shop-net"]
    proc = subprocess.run(["docker", "stack", "config", "-c", str(out)], capture_output=True,
                          text=True, env={**os.environ, "ORCHESTRATOR_TOKEN": "t"},
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "endpoint_mode: dnsrr" in proc.stdout


def test_cli_export_writes_yaml_and_names_a_bad_file(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    path = tmp_path / "shop.yml"
    path.write_text(f"name: shop\nuses: {ECHO}:Echo\nreplicas: 2\n")
    assert main(["export", "-f", str(path), "--to", "kubernetes"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert {d["kind"] for d in docs} >= {"StatefulSet", "Deployment", "Secret"}
    path.write_text(f"name: shop\nuses: {ECHO}:Echo\nvolumes: ['/a:/b']\n")
    assert main(["export", "-f", str(path), "--to", "kubernetes"]) == 2
    assert "volumes" in capsys.readouterr().err
    out = tmp_path / "no-such-dir" / "out.yml"
    assert main(["export", "-f", str(path), "--to", "compose", "-o", str(out)]) == 2
    assert f"cannot write {out}" in capsys.readouterr().err


def test_an_external_deployment_has_nothing_to_export(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    external = spec(external=True, port=9999)
    for export in (lambda s: to_compose(s, CTX), lambda s: to_swarm(s, CTX, sources()),
                   lambda s: to_kubernetes(s, CTX, sources())):
        with pytest.raises(SpecError) as caught:
            export(external)
        assert caught.value.field == "external"
    path = tmp_path / "app.yml"
    path.write_text(f"deployments:\n- {{name: db, uses: '{ECHO}:Echo', external: true, "
                    f"port: 9999}}\n- {{name: shop, uses: '{ECHO}:Echo', needs: db}}\n")
    out = tmp_path / "stack.yml"
    assert main(["export", "-f", str(path), "--to", "swarm", "-o", str(out)]) == 0
    assert "db is external: not exported" in capsys.readouterr().err
    assert sorted(yaml.safe_load(out.read_text())["services"]) == ["shop-head",
                                                                   "shop-s0-r0-g1"]
    path.write_text(f"name: db\nuses: '{ECHO}:Echo'\nexternal: true\nport: 9999\n")
    assert main(["export", "-f", str(path), "--to", "compose"]) == 2
    assert "nothing to export" in capsys.readouterr().err


@pytest.mark.parametrize("export", ["compose", "swarm"])
def test_log_rotation_is_exported_as_logging_options(export: str) -> None:
    def services(**fields: Any) -> dict[str, Any]:
        s = spec(shards=1, replicas=1, **fields)
        doc = to_compose(s, CTX) if export == "compose" else to_swarm(s, CTX, sources())
        return dict(doc["services"])

    for service in services(log_max_size="64k", log_max_files=2).values():
        assert service["logging"] == {"options": {"max-size": "65536", "max-file": "2"}}
    assert not any("logging" in s for s in services(log_max_size=None).values())


def test_the_export_package_keeps_one_module_per_target_and_its_names() -> None:
    import orchestrator.planning.export as export

    assert export.__all__ == sorted(export.__all__)
    for name in export.__all__:
        assert getattr(export, name) is not None
    modules = {p.stem for p in Path(export.__file__).parent.glob("*.py")}
    assert modules == {"__init__", "common", "compose", "swarm", "kubernetes"}
    for module in modules - {"__init__"}:  # pure: no engine, docker, grpc or asyncio
        text = (Path(export.__file__).parent / f"{module}.py").read_text()
        for banned in ("import docker", "import grpc", "import asyncio", "orchestrator.engine."
                       "docker_engine"):
            assert banned not in text, (module, banned)
