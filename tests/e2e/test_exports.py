"""``dockyard export docker|k8s``: the manifests pass the Kubernetes schemas (strict: an unknown
field fails), their probes are routes a real server answers without a key, the Dockerfile's
command serves the alias, nothing secret is written, and bad options get one line and the
README's exit code."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from clirun import run_cli
from dockyard.services import exports
from servers import Server

pytestmark = pytest.mark.e2e


def _validate(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, latest_version(), strict=True)


def _manifests(capsys: pytest.CaptureFixture[str], home: Path, out: Path, *args: str) -> list[Any]:
    code, printed, err = run_cli(
        capsys, "export", "k8s", "lr", "--home", str(home), "--out", str(out), *args
    )
    assert code == 0, err
    (path,) = out.glob("*.yaml")
    assert f"wrote {path}" in printed
    assert "kubectl create secret generic dockyard-lr-secrets" in printed
    return list(yaml.safe_load_all(path.read_text()))


def test_k8s_manifests_pass_the_schemas_and_probe_real_routes(
    served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], start_server: Any
) -> None:
    documents = _manifests(
        capsys, served, tmp_path / "k8s", "--min-replicas", "3", "--max-replicas", "6"
    )

    assert [d["kind"] for d in documents] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    for document in documents:
        _validate(document)
    broken = copy.deepcopy(documents[0])
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):  # the check is strict
        _validate(broken)

    deployment, service, autoscaler = documents
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == exports.serve_args(
        exports.Deployment(
            model="lr", alias="production", framework="sklearn", image="i", requirement="r"
        )
    )
    assert container["args"][:3] == ["dockyard", "serve", "lr@production"]
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (3, 6)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
    }
    assert {ref["name"] for ref in secrets.values()} == {"dockyard-lr-secrets"}
    assert not secrets["DOCKYARD_DATABASE_URL"]["optional"]
    assert not secrets["DOCKYARD_API_KEY_SECRET"]["optional"]

    # The probes' paths answer 200 without a key on a real server that requires keys.
    server: Server = start_server(served, auth=True)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert httpx.get(f"{server.url}{path}").status_code == 200, probe
    text = (tmp_path / "k8s" / "dockyard-lr.yaml").read_text()
    assert server.admin_key not in text
    assert "dk_" not in text
    assert "sqlite" not in text


def test_the_dockerfile_serves_the_alias_from_the_shared_registry(
    served: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, printed, err = run_cli(
        capsys, "export", "docker", "lr", "--home", str(served), "--out", str(tmp_path)
    )
    assert code == 0, err
    lines = (tmp_path / "Dockerfile").read_text().splitlines()
    assert "FROM python:3.11-slim" in lines
    (requirement,) = [line for line in lines if line.startswith("ARG DOCKYARD_REQUIREMENT=")]
    assert requirement.startswith('ARG DOCKYARD_REQUIREMENT="dockyard[postgres,s3]==')
    (command,) = [json.loads(line[4:]) for line in lines if line.startswith("CMD ")]
    assert command[:3] == ["dockyard", "serve", "lr@production"]
    assert "USER 10001" in lines
    assert any(exports.READY in line for line in lines if "urlopen" in line)
    variables = (tmp_path / "docker.env").read_text()
    assert "DOCKYARD_DATABASE_URL=\n" in variables
    assert "DOCKYARD_API_KEY_SECRET=\n" in variables
    assert "docker build -t dockyard-lr:" in printed


@pytest.mark.parametrize(
    ("args", "code", "names"),
    [
        (["k8s", "lr:1"], 2, "by an alias"),
        (["k8s", "lr", "--cpu", "lots"], 2, "--cpu 'lots'"),
        (["k8s", "lr", "--min-replicas", "4", "--max-replicas", "2"], 2, "--max-replicas 2"),
        (["docker", "lr", "--image", "Bad Image"], 2, "--image 'Bad Image'"),
        (["docker", "nosuch"], 4, "nosuch"),
    ],
)
def test_bad_options_get_one_line_and_their_exit_code(
    served: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    names: str,
) -> None:
    kind, *rest = args
    exit_code, _, err = run_cli(
        capsys, "export", kind, *rest, "--home", str(served), "--out", str(tmp_path / "out")
    )
    assert exit_code == code, err
    assert err.count("\n") == 1, err
    assert names in err, err
    assert not (tmp_path / "out").exists()
