"""Deployment exports: a Dockerfile, Kubernetes manifests or a Ray Serve config for a model's alias.

The image installs Dockyard with the extras the served version's framework needs and runs
``dockyard serve NAME@ALIAS``; every replica reads one shared registry (PostgreSQL for metadata,
an S3 bucket for artifacts: ``docs/scaling.md``) and follows it, so an alias moved from anywhere
reaches every pod without a new image. Nothing secret is written: the manifests name a Kubernetes
Secret (database URL, API-key hash key, encryption key, bucket credentials) that the operator
creates, and the files say how.

The Ray Serve config runs the replicas of the version the alias names now on a Ray cluster, as the
``ray`` backend would deploy them (``dockyard.services.ray_options``); a ``dockyard serve NAME
--backend ray`` in front uses that application as it finds it. Its nodes take the secrets from
their environment, likewise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from dockyard.config import RAY_KNOBS, SECRET_FIELDS, Settings
from dockyard.errors import InvalidInput
from dockyard.registry.refs import parse_ref
from dockyard.services.ray_options import application_name, deployment_options
from dockyard.services.workspace import Workspace

PORT = 8000
HOME = "/home/dockyard/.dockyard"
LIVE = "/v2/health/live"
READY = "/v2/health/ready"
BASE_IMAGE = "python:3.11-slim"
FRAMEWORK_EXTRAS = {
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "onnx": "onnx",
    "torch": "torch",
    "treelite": "optimize",
}
"""The pip extra a served framework needs beyond the core install (scikit-learn and Python
functions need none)."""
SHARED_EXTRAS = ("postgres", "s3")
SECRET_KEYS = {
    "DOCKYARD_DATABASE_URL": "database-url",
    "DOCKYARD_API_KEY_SECRET": "api-key-secret",
    "DOCKYARD_ENCRYPTION_KEY": "encryption-key",
    "AWS_ACCESS_KEY_ID": "aws-access-key-id",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-access-key",
}
"""Environment variable → key of the deployment's Secret. The database URL and the API-key hash
key are required (without them a pod has no registry, and keys made elsewhere fail on it); the
others are optional (no encryption at rest; credentials from a pod role instead)."""
REQUIRED_SECRETS = frozenset({"DOCKYARD_DATABASE_URL", "DOCKYARD_API_KEY_SECRET"})
NAME_PATTERN = re.compile(r"[^a-z0-9-]+")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
"""A Kubernetes resource quantity (``500m``, ``2``, ``1Gi``)."""
IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")
RAY_BUILDER = "dockyard.scaling.ray_replica:build"
"""The application builder a Ray Serve config names: it loads the version as ``dockyard serve``."""


@dataclass(frozen=True)
class Deployment:
    """What the exports describe: one model's alias served by replicas of one image."""

    model: str
    alias: str
    framework: str
    image: str
    requirement: str
    """The pip requirement the image installs (Dockyard with the extras it needs)."""
    version: int = 0
    """The version the alias names now (the one a Ray Serve config serves); 0: not resolved."""
    artifact_url: str = ""
    s3_endpoint_url: str = ""
    workers: int = 1
    cpu: str = "1"
    memory: str = "1Gi"
    min_replicas: int = 2
    max_replicas: int = 10
    target_cpu_percent: int = 70
    grace_s: int = 40
    """Pods get this long after SIGTERM: the server drains within ``drain_timeout_s``."""

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.alias}"

    @property
    def app(self) -> str:
        """The Kubernetes name of every object: ``dockyard-<model>``, DNS-1123."""
        return f"dockyard-{NAME_PATTERN.sub('-', self.model.lower()).strip('-')}"[:63]

    @property
    def secret(self) -> str:
        return f"{self.app}-secrets"


def describe(
    workspace: Workspace,
    ref: str,
    *,
    image: str | None = None,
    requirement: str | None = None,
    **sizing: Any,
) -> Deployment:
    """The deployment of ``ref`` (``NAME`` means ``NAME@production``); the framework is the one
    of the version the alias names now. Refused unless it is an alias: a version number would pin
    the pods to one version and they could never follow a rollout (a Ray Serve config serves one
    version, and the ``dockyard serve NAME@ALIAS`` in front of it follows the alias)."""
    parsed = parse_ref(ref if "@" in ref or ":" in ref else f"{ref}@production")
    if parsed.alias is None:
        raise InvalidInput(
            f"export {ref!r} by an alias (NAME@ALIAS): the pods serve what the alias names and "
            "follow it when it moves"
        )
    if image is not None and not IMAGE.match(image):
        raise InvalidInput(
            f"--image {image!r} is not an image name (lowercase letters, digits, . _ / : @ -)"
        )
    served = workspace.resolve(f"{parsed.name}@{parsed.alias}")
    settings: Settings = workspace.settings
    requirement = requirement or _requirement(served.framework)
    deployment = Deployment(
        model=parsed.name,
        alias=parsed.alias,
        framework=served.framework,
        image=image or f"dockyard-{parsed.name.lower()}:{_dockyard_version()}",
        requirement=requirement,
        version=served.version,
        artifact_url=settings.artifact_url,
        s3_endpoint_url=settings.s3_endpoint_url,
        grace_s=int(settings.drain_timeout_s) + 10,
        **sizing,
    )
    for option, value in (("cpu", deployment.cpu), ("memory", deployment.memory)):
        if not QUANTITY.match(value):
            raise InvalidInput(f"--{option} {value!r} is not a Kubernetes quantity (500m, 2, 1Gi)")
    return deployment


def dockerfile(deployment: Deployment) -> str:
    """A Dockerfile for the image: Dockyard installed, a user of its own, the health check."""
    health = (
        "import sys, urllib.request; sys.exit(urllib.request.urlopen("
        f"'http://127.0.0.1:{PORT}{READY}', timeout=2).status != 200)"
    )
    return "\n".join(
        [
            f"# Serves {deployment.ref} ({deployment.framework}) from the shared registry named by",
            "# the environment (DOCKYARD_DATABASE_URL, DOCKYARD_ARTIFACT_URL; see docker.env).",
            f"# Build: docker build -t {deployment.image} .",
            "# Another index or a wheel: --build-arg DOCKYARD_REQUIREMENT=...",
            f"FROM {BASE_IMAGE}",
            f'ARG DOCKYARD_REQUIREMENT="{deployment.requirement}"',
            'RUN pip install --no-cache-dir "$DOCKYARD_REQUIREMENT" \\',
            "    && useradd --create-home --uid 10001 dockyard",
            "USER 10001",
            f"ENV DOCKYARD_HOME={HOME} PYTHONUNBUFFERED=1",
            f"EXPOSE {PORT}",
            "HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \\",
            f"    CMD {json.dumps(['python', '-c', health])}",
            f"CMD {json.dumps(serve_args(deployment))}",
            "",
        ]
    )


def docker_env(deployment: Deployment) -> str:
    """The variables a container needs (``docker run --env-file``), secrets left empty."""
    lines = [
        "# docker run --env-file docker.env -p 8000:8000 IMAGE; fill in the empty values.",
        f"DOCKYARD_ARTIFACT_URL={deployment.artifact_url}",
        f"DOCKYARD_S3_ENDPOINT_URL={deployment.s3_endpoint_url}",
    ]
    lines += [f"{name}=" for name in SECRET_KEYS]
    return "\n".join(lines) + "\n"


def kubernetes(deployment: Deployment) -> list[dict[str, Any]]:
    """A Deployment (probes on the health routes), a Service and a HorizontalPodAutoscaler."""
    labels = {"app.kubernetes.io/name": deployment.app, "app.kubernetes.io/part-of": "dockyard"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": deployment.app, "labels": labels},
            "spec": {
                "replicas": deployment.min_replicas,
                "selector": {"matchLabels": {"app.kubernetes.io/name": deployment.app}},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": {
                    "metadata": {"labels": labels},
                    "spec": _pod(deployment),
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": deployment.app, "labels": labels},
            "spec": {
                "selector": {"app.kubernetes.io/name": deployment.app},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": deployment.app, "labels": labels},
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": deployment.app,
                },
                "minReplicas": deployment.min_replicas,
                "maxReplicas": deployment.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": deployment.target_cpu_percent,
                            },
                        },
                    }
                ],
            },
        },
    ]


def serve_args(deployment: Deployment) -> list[str]:
    """The container's command: serve the alias on every interface of the container."""
    return [
        "dockyard",
        "serve",
        deployment.ref,
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--workers",
        str(deployment.workers),
    ]


def secret_command(deployment: Deployment) -> str:
    """The ``kubectl`` line that creates the Secret the manifests refer to."""
    values = " ".join(f"--from-literal={key}=..." for key in SECRET_KEYS.values())
    return f"kubectl create secret generic {deployment.secret} {values}"


def ray_config(deployment: Deployment, settings: Settings) -> dict[str, Any]:
    """A Ray Serve config (``serve deploy``): one application serving the version the alias
    names now, without Ray's HTTP proxy (requests come through ``dockyard serve --backend ray``)
    and with the replicas sized by the model's knobs."""
    return {
        "proxy_location": "Disabled",
        "applications": [
            {
                "name": application_name(deployment.model, deployment.version),
                "route_prefix": None,
                "import_path": RAY_BUILDER,
                "args": {
                    "model": deployment.model,
                    "version": deployment.version,
                    "settings": ray_settings(settings, deployment.model),
                },
                "deployments": [
                    {"name": deployment.model, **deployment_options(settings, deployment.model)}
                ],
            }
        ],
    }


def ray_settings(settings: Settings, model: str) -> dict[str, Any]:
    """The settings a replica opens the registry and loads the version with, none of them
    secret: the database URL and the keys come from the ``DOCKYARD_*`` environment of the
    cluster's nodes. Only what is set here is written, since an entry outranks the nodes' own
    variables: the home when the registry lives in it (its SQLite database or its artifacts
    folder: the nodes must reach it at that path), the bucket, ``require_signed`` when on, and
    the model's Ray knobs."""
    table: dict[str, Any] = {}
    if not (settings.database_url and settings.artifact_url):
        table["home"] = str(settings.home.resolve())
    if settings.artifact_url:
        table["artifact_url"] = settings.artifact_url
        table["s3_timeout_s"] = settings.s3_timeout_s
        if settings.s3_endpoint_url:
            table["s3_endpoint_url"] = settings.s3_endpoint_url
    if settings.require_signed:
        table["require_signed"] = True
    options = settings.model_options(model)
    table["model_options"] = [f"{model}.{knob}={getattr(options, knob)}" for knob in RAY_KNOBS]
    assert not table.keys() & SECRET_FIELDS
    return table


def ray_header(deployment: Deployment, config: dict[str, Any], file: str) -> str:
    """The comment at the top of Ray Serve config ``config`` (written as ``file``): what it
    serves, what the nodes need, how to deploy it and to serve it."""
    app = application_name(deployment.model, deployment.version)
    home = ray_home(config)
    where = (
        [
            f"# The registry lives in the home {home} (its SQLite database or artifacts folder):",
            "# every node must reach it at that path (this machine, or a shared file system).",
        ]
        if home
        else []
    )
    return "\n".join(
        [
            f"# Ray Serve config: application {app} serves {deployment.model} version "
            f"{deployment.version} ({deployment.framework}),",
            f"# the version {deployment.ref} names now (written by `dockyard export ray`).",
            "# Nothing secret is written here. Every node of the cluster needs",
            f'#   pip install "{_requirement(deployment.framework, "ray")}"',
            "# and the registry's secrets in its environment: DOCKYARD_DATABASE_URL (a shared",
            "# PostgreSQL), DOCKYARD_ENCRYPTION_KEY if the registry uses one, the bucket's AWS",
            "# credentials (or a node role); and DOCKYARD_CONFIG, the dockyard.toml every machine",
            "# of the registry runs with (its [governance] policy).",
            *where,
            f"# Deploy: serve deploy {file} --address http://HEAD:8265 (Ray's dashboard)",
            f"#     or: serve run {file} --address HEAD:PORT --non-blocking",
            f"# Then serve it: {ray_front_command(deployment)}",
            "# (that server uses this application as it finds it, and leaves it running).",
            "",
        ]
    )


def ray_home(config: dict[str, Any]) -> str | None:
    """The home a Ray Serve config's replicas open the registry in (None: the nodes' own homes,
    the registry being shared)."""
    home: str | None = config["applications"][0]["args"]["settings"].get("home")
    return home


def ray_front_command(deployment: Deployment) -> str:
    """The ``dockyard serve`` line that answers for the Ray application."""
    return f"dockyard serve {deployment.ref} --backend ray --ray-address HEAD:PORT"


def _pod(deployment: Deployment) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "DOCKYARD_HOME", "value": HOME},
        {"name": "DOCKYARD_ARTIFACT_URL", "value": deployment.artifact_url},
        {"name": "DOCKYARD_S3_ENDPOINT_URL", "value": deployment.s3_endpoint_url},
    ]
    env += [
        {
            "name": name,
            "valueFrom": {
                "secretKeyRef": {
                    "name": deployment.secret,
                    "key": key,
                    "optional": name not in REQUIRED_SECRETS,
                }
            },
        }
        for name, key in SECRET_KEYS.items()
    ]
    probe = {"port": "http"}
    return {
        "terminationGracePeriodSeconds": deployment.grace_s,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
        "containers": [
            {
                "name": "dockyard",
                "image": deployment.image,
                "args": serve_args(deployment),
                "ports": [{"name": "http", "containerPort": PORT}],
                "env": env,
                "resources": {
                    "requests": {"cpu": deployment.cpu, "memory": deployment.memory},
                    "limits": {"memory": deployment.memory},
                },
                # A model may take a while to load: the start-up probe gives it five minutes
                # before liveness counts; readiness keeps traffic away until it serves.
                "startupProbe": {
                    "httpGet": {"path": LIVE, **probe},
                    "periodSeconds": 5,
                    "failureThreshold": 60,
                },
                "livenessProbe": {"httpGet": {"path": LIVE, **probe}, "periodSeconds": 10},
                "readinessProbe": {"httpGet": {"path": READY, **probe}, "periodSeconds": 5},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "home", "mountPath": HOME},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [{"name": "home", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
    }


def _requirement(framework: str, *extras: str) -> str:
    """Dockyard with the extras a served ``framework`` needs, the shared registry's and
    ``extras``, at this version."""
    names = sorted({*SHARED_EXTRAS, *_extra(framework), *extras})
    return f"dockyard[{','.join(names)}]=={_dockyard_version()}"


def _extra(framework: str) -> list[str]:
    extra = FRAMEWORK_EXTRAS.get(framework)
    return [extra] if extra else []


def _dockyard_version() -> str:
    try:
        return version("dockyard")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "0.0.0"
