"""TLS on the head, host side, without an engine: the spec's fields (errors name the field),
the head's container (files mounted read-only, flags, never key material in its
environment), the exports (secrets, never an environment variable, never the key's bytes),
the warning for an exposed head without TLS, and the clients' TLS arguments."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import trustme
import yaml

from orchestrator.cli import main
from orchestrator.client import Client, client_tls
from orchestrator.deployment import Deployment
from orchestrator.engine.memory import MemoryEngine
from orchestrator.errors import SpecError
from orchestrator.planning.export import to_compose, to_kubernetes, to_swarm
from orchestrator.planning.pods import PodContext, head_pod
from orchestrator.planning.tls import TLS_DIR
from orchestrator.schema import config_schema
from orchestrator.spec import DeploymentSpec
from orchestrator.tls import ClientTLS, exposure_warning, is_loopback, own_server_name
from tests.support.fakes import EngineProbe, FakeHeads

ROOT = Path(__file__).resolve().parents[2]
ECHO = str(ROOT / "executors" / "echo.py")
CTX = PodContext(owner="t", token="s3cret")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("pki")
    ca, client_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("head.example", "127.0.0.1")
    client = client_ca.issue_cert("me")
    out = {}
    for name, blob in (("ca", ca.cert_pem), ("cert", server.cert_chain_pems[0]),
                       ("key", server.private_key_pem), ("client_ca", client_ca.cert_pem),
                       ("client_cert", client.cert_chain_pems[0]),
                       ("client_key", client.private_key_pem)):
        blob.write_to_path(str(tmp / f"{name}.pem"))
        out[name] = str(tmp / f"{name}.pem")
    return out


def spec(pki: dict[str, str] | None = None, **fields: Any) -> DeploymentSpec:
    tls = {} if pki is None else {"tls_cert": pki["cert"], "tls_key": pki["key"]}
    return DeploymentSpec.from_fields(**{"name": "shop", "uses": f"{ECHO}:Echo", **tls,
                                         **fields})


def mtls(pki: dict[str, str]) -> dict[str, str]:
    return {"tls_ca": pki["ca"], "tls_client_ca": pki["client_ca"],
            "tls_client_cert": pki["client_cert"], "tls_client_key": pki["client_key"]}


# -- the spec --------------------------------------------------------------------------


def test_tls_is_off_by_default_and_every_field_is_in_the_schema() -> None:
    s = spec()
    assert not s.tls and s.own_tls() is None and s.tls_cert is None
    props = config_schema()["$defs"]["deployment"]["properties"]
    for name in ("tls_cert", "tls_key", "tls_client_ca", "tls_ca", "tls_client_cert",
                 "tls_client_key"):
        assert props[name]["description"] and props[name]["default"] is None


def test_relative_paths_are_relative_to_the_file_and_round_trip(pki: dict[str, str]) -> None:
    base = Path(pki["cert"]).parent
    s = DeploymentSpec.from_fields(name="shop", uses=f"{ECHO}:Echo", tls_cert="cert.pem",
                                   tls_key="key.pem", tls_ca="ca.pem", base_dir=base)
    assert s.tls and s.tls_cert == pki["cert"] and s.tls_key == pki["key"]
    again = DeploymentSpec.from_fields(**json.loads(json.dumps(s.to_fields())))
    assert again == s
    own = s.own_tls()
    assert own == ClientTLS(ca=pki["ca"], server_name="head.example")


@pytest.mark.parametrize(("fields", "field"), [
    ({"tls_cert": "cert"}, "tls_key"),
    ({"tls_key": "key"}, "tls_cert"),
    ({"tls_client_ca": "client_ca"}, "tls_client_ca"),
    ({"tls_cert": "cert", "tls_key": "/nonexistent/key.pem"}, "tls_key"),
    ({"tls_cert": "cert", "tls_key": "ca"}, "tls_key"),  # not the certificate's key
    ({"tls_cert": "cert", "tls_key": "key", "tls_client_ca": "client_ca"}, "tls_client_cert"),
    ({"tls_cert": "cert", "tls_key": "key", "tls_client_cert": "client_cert"},
     "tls_client_key"),
    ({"tls_cert": "cert", "tls_key": "key", "tls_client_cert": "client_cert",
      "tls_client_key": "client_key"}, "tls_client_cert"),  # without tls_client_ca
    ({"tls_cert": "cert", "tls_key": "key", "tls_ca": "key"}, "tls_ca"),  # a key, no CA
    ({"tls_cert": "cert", "tls_key": "key", "tls_ca": ECHO}, "tls_ca"),  # not PEM
    ({"tls_cert": 7, "tls_key": "key"}, "tls_cert"),
])
def test_bad_tls_input_names_the_field(pki: dict[str, str], fields: dict[str, Any],
                                       field: str) -> None:
    raw = {k: pki.get(v, v) if isinstance(v, str) else v for k, v in fields.items()}
    with pytest.raises(SpecError) as info:
        DeploymentSpec.from_fields(name="shop", uses=f"{ECHO}:Echo", **raw)
    assert info.value.field == field


def test_an_unreadable_file_is_refused_by_name(pki: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read") as info:
        spec(tls_cert=pki["cert"], tls_key=str(tmp_path))  # a folder
    assert info.value.field == "tls_key"


# -- the head's container --------------------------------------------------------------


def test_the_head_mounts_its_files_read_only_and_gets_the_flags(pki: dict[str, str]) -> None:
    plain = head_pod(spec(), CTX).container
    assert "--tls-cert" not in plain.command and not plain.mounts
    c = head_pod(spec(pki, **mtls(pki)), CTX).container
    mounts = {m.target: m for m in c.mounts}
    assert mounts[f"{TLS_DIR}/tls.key"].source == pki["key"]
    assert all(m.read_only for m in c.mounts)
    assert set(mounts) == {f"{TLS_DIR}/{f}" for f in (
        "tls.crt", "tls.key", "client-ca.crt", "probe.crt", "probe.key")}
    command = list(c.command)
    for flag, file in (("--tls-cert", "tls.crt"), ("--tls-key", "tls.key"),
                       ("--tls-client-ca", "client-ca.crt")):
        assert command[command.index(flag) + 1] == f"{TLS_DIR}/{file}"
    assert c.env["ORCHESTRATOR_PROBE_TLS"] == "1"
    assert c.env["ORCHESTRATOR_PROBE_TLS_CERT"] == f"{TLS_DIR}/probe.crt"
    secrets = [Path(p).read_text() for p in pki.values()]
    assert not any(value in secrets or "PRIVATE KEY" in value for value in c.env.values())


def test_workers_are_the_same_with_or_without_tls(pki: dict[str, str]) -> None:
    assert spec(pki).worker_hash() == spec().worker_hash()


def test_the_runtime_parses_the_flags_the_head_gets(pki: dict[str, str]) -> None:
    from orchestrator.runtime.__main__ import _parser

    command = head_pod(spec(pki, **mtls(pki)), CTX).container.command
    args = _parser().parse_args(list(command))
    assert args.tls_cert == f"{TLS_DIR}/tls.crt" and args.tls_client_ca.endswith("ca.crt")


# -- exposure warning ------------------------------------------------------------------


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("192.168.1.4", False), ("::", False), ("example.com", False)])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    warning = exposure_warning("shop", host, tls=False)
    assert (warning is None) is loopback
    assert exposure_warning("shop", host, tls=True) is None
    if warning:
        assert "field host" in warning and "tls_cert" in warning


def test_starting_an_exposed_head_without_tls_warns_naming_the_field(
    caplog: pytest.LogCaptureFixture, pki: dict[str, str]
) -> None:
    for fields, warned in (({"host": "0.0.0.0"}, True), ({}, False),
                           ({"host": "0.0.0.0", "tls_cert": pki["cert"],
                             "tls_key": pki["key"]}, True)):
        engine = MemoryEngine()
        engine.add_image("orchestrator-runtime:test")
        heads = FakeHeads(engine)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="orchestrator"), Deployment(
                name="shop", uses="pkg.mod:Exec", image="orchestrator-runtime:test",
                engine=engine, probe=EngineProbe(engine),
                connect=heads.connect, reaper=False, **fields):
            pass
        said = [r.getMessage() for r in caplog.records if "without TLS" in r.getMessage()]
        assert bool(said) is (warned and "tls_cert" not in fields), (fields, said)
        if said:
            assert "(field host)" in said[0]


# -- exports ---------------------------------------------------------------------------


def _no_key_anywhere(doc: Any, pki: dict[str, str]) -> None:
    text = yaml.safe_dump(doc)
    assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text


def _head_env(service: dict[str, Any]) -> dict[str, str]:
    return dict(service["environment"])


def test_compose_carries_the_files_as_secrets(pki: dict[str, str]) -> None:
    doc = to_compose(spec(pki, **mtls(pki)), CTX)
    head = doc["services"]["shop-head"]
    assert doc["secrets"]["shop-tls-key"] == {"file": pki["key"]}
    assert {"source": "shop-tls-key", "target": f"{TLS_DIR}/tls.key"} in head["secrets"]
    assert all(TLS_DIR not in v for v in head.get("volumes", []))  # secrets, not volumes
    assert f"{TLS_DIR}/tls.key" in head["command"]
    assert all(pki["key"] not in v for v in _head_env(head).values())
    _no_key_anywhere(doc, pki)
    assert "secrets" not in to_compose(spec(), CTX)


def test_swarm_carries_the_files_as_secrets_the_head_reads(pki: dict[str, str]) -> None:
    doc = to_swarm(spec(pki, **mtls(pki)), CTX, {ECHO: Path(ECHO).read_text()})
    head = doc["services"]["shop-head"]
    assert doc["secrets"]["shop-tls-key"] == {"name": "shop-tls-key", "file": pki["key"]}
    assert doc["secrets"]["shop-token"] == {"external": True, "name": "shop-token"}
    key = next(s for s in head["secrets"] if s["source"] == "shop-tls-key")
    assert key == {"source": "shop-tls-key", "target": "orchestrator-tls.key",
                   "uid": "10001", "gid": "10001", "mode": 0o400}
    command = head["command"]
    assert command[command.index("--tls-key") + 1] == "/run/secrets/orchestrator-tls.key"
    assert _head_env(head)["ORCHESTRATOR_PROBE_TLS_KEY"] == "/run/secrets/orchestrator-probe.key"
    assert "volumes" not in head
    _no_key_anywhere(doc, pki)


def test_swarm_tls_stack_passes_the_docker_cli_schema(pki: dict[str, str],
                                                      tmp_path: Path) -> None:
    path = tmp_path / "app.yml"
    path.write_text(yaml.safe_dump({"name": "shop", "uses": f"{ECHO}:Echo", "port": 8443,
                                    "host": "0.0.0.0", "tls_cert": pki["cert"],
                                    "tls_key": pki["key"]}))
    out = tmp_path / "stack.yml"
    assert main(["export", "-f", str(path), "--to", "swarm", "-o", str(out)]) == 0
    text = out.read_text()
    assert "docker secret create shop-token" in text
    assert "docker secret create shop-tls" not in text  # file secrets: the stack makes them
    proc = subprocess.run(["docker", "stack", "config", "-c", str(out)], capture_output=True,
                          text=True, env={**os.environ, "ORCHESTRATOR_TOKEN": "t"},
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_kubernetes_mounts_a_secret_volume_and_probes_over_tls(pki: dict[str, str],
                                                               tmp_path: Path) -> None:
    docs = to_kubernetes(spec(pki, **mtls(pki)), CTX, {ECHO: Path(ECHO).read_text()})
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    head = next(d for d in docs if d["kind"] == "Deployment"
                and d["metadata"]["name"] == "shop-head")
    pod = head["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert {"name": "tls", "mountPath": TLS_DIR, "readOnly": True} in container["volumeMounts"]
    assert {"name": "tls", "secret": {"secretName": "shop-tls", "defaultMode": 0o440}} \
        in pod["spec"]["volumes"]
    assert "exec" in container["readinessProbe"]  # kubelet's grpc probe has no TLS
    assert pod["metadata"]["annotations"]["prometheus.io/scheme"] == "https"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ORCHESTRATOR_PROBE_TLS"] == "1"
    assert all(pki["key"] not in str(v) for v in env.values())
    _no_key_anywhere(docs, pki)
    path = tmp_path / "app.yml"
    path.write_text(yaml.safe_dump({"name": "shop", "uses": f"{ECHO}:Echo",
                                    "tls_cert": pki["cert"], "tls_key": pki["key"]}))
    out = tmp_path / "k8s.yml"
    assert main(["export", "-f", str(path), "--to", "kubernetes", "-o", str(out)]) == 0
    assert (f"kubectl create secret generic shop-tls --from-file=tls.crt={pki['cert']} "
            f"--from-file=tls.key={pki['key']}") in out.read_text()


# -- clients ---------------------------------------------------------------------------


def test_client_tls_arguments(pki: dict[str, str]) -> None:
    assert client_tls() is None and client_tls(False) is None
    assert client_tls(True) == ClientTLS()
    assert client_tls(ca=pki["ca"]) == ClientTLS(ca=pki["ca"])
    with pytest.raises(SpecError) as info:
        Client("127.0.0.1:1", ca=pki["ca"], cert=pki["client_cert"])
    assert info.value.field == "key"
    with pytest.raises(SpecError) as info:
        Client("127.0.0.1:1", ca="/nonexistent.pem")
    assert info.value.field == "ca"
    with Client("127.0.0.1:1", ca=pki["ca"], cert=pki["client_cert"],
                key=pki["client_key"]) as c:
        assert c.tls is not None and c.tls.cert == pki["client_cert"]
    assert own_server_name(pki["cert"]) == "head.example"


def test_ping_with_a_bad_ca_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ping", "127.0.0.1:1", "--ca", "/nonexistent.pem"]) == 2
    assert "ca" in capsys.readouterr().err


def test_up_refuses_to_change_tls_on_a_running_deployment(pki: dict[str, str]) -> None:
    from orchestrator.apply import decide
    from orchestrator.config import DeploymentConfig
    from orchestrator.errors import ConfigError

    fields = {"name": "shop", "uses": f"{ECHO}:Echo", "tls_cert": pki["cert"],
              "tls_key": pki["key"]}
    cfg = DeploymentConfig(fields=fields, spec=DeploymentSpec.from_fields(**fields),
                           source=Path("/tmp/app.yml"), path="")
    with pytest.raises(ConfigError, match="tls_cert"):
        decide(spec(), cfg)


def test_a_rolling_update_cannot_change_tls(pki: dict[str, str]) -> None:
    import asyncio

    engine = MemoryEngine()
    engine.add_image("orchestrator-runtime:test")
    heads = FakeHeads(engine)
    with Deployment(name="shop", uses="pkg.mod:Exec", image="orchestrator-runtime:test",
                    engine=engine, probe=EngineProbe(engine), connect=heads.connect,
                    reaper=False) as dep:
        with pytest.raises(SpecError) as info:
            asyncio.run(dep.rolling_update(tls_cert=pki["cert"], tls_key=pki["key"]))
        assert info.value.field == "tls_cert"
        assert dep.spec.tls_cert is None
