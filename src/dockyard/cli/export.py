"""``dockyard export docker|k8s|ray NAME``: files that deploy a model's alias elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dockyard.cli.options import HomeOption, open_workspace

RAY_CONFIG = "serve-config.yaml"

app = typer.Typer(
    help="Write deployment files for a model's alias: a Dockerfile, Kubernetes manifests, a "
    "Ray Serve config.",
    no_args_is_help=True,
)

RefArgument = Annotated[
    str, typer.Argument(help="NAME (its production alias) or NAME@ALIAS.", show_default=False)
]
OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out", help="Folder to write into (default: ./dockyard-NAME-KIND).", show_default=False
    ),
]
ImageOption = Annotated[
    str | None,
    typer.Option(
        "--image", help="Image name (default: dockyard-NAME:VERSION).", show_default=False
    ),
]


@app.command("docker")
def docker(
    ref: RefArgument, out: OutOption = None, image: ImageOption = None, home: HomeOption = None
) -> None:
    """A Dockerfile and docker.env: an image serving REF from the shared registry."""
    from dockyard.services import exports

    deployment = exports.describe(open_workspace(home), ref, image=image)
    folder = _folder(out, deployment.model, "docker")
    (folder / "Dockerfile").write_text(exports.dockerfile(deployment))
    (folder / "docker.env").write_text(exports.docker_env(deployment))
    typer.echo(f"wrote {folder / 'Dockerfile'} and {folder / 'docker.env'}")
    typer.echo(f"build: docker build -t {deployment.image} {folder}")


@app.command("k8s")
def k8s(
    ref: RefArgument,
    out: OutOption = None,
    image: ImageOption = None,
    min_replicas: Annotated[int, typer.Option("--min-replicas", min=1)] = 2,
    max_replicas: Annotated[int, typer.Option("--max-replicas", min=1)] = 10,
    target_cpu: Annotated[
        int, typer.Option("--target-cpu", min=1, max=100, help="HPA target CPU utilization, %.")
    ] = 70,
    cpu: Annotated[str, typer.Option("--cpu", help="CPU request of a pod.")] = "1",
    memory: Annotated[str, typer.Option("--memory", help="Memory request and limit.")] = "1Gi",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Workers per pod.")] = 1,
    home: HomeOption = None,
) -> None:
    """Kubernetes manifests (Deployment, Service, HorizontalPodAutoscaler) serving REF."""
    import yaml

    from dockyard.errors import InvalidInput
    from dockyard.services import exports

    if max_replicas < min_replicas:
        raise InvalidInput(f"--max-replicas {max_replicas} is below --min-replicas {min_replicas}")
    deployment = exports.describe(
        open_workspace(home),
        ref,
        image=image,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_cpu_percent=target_cpu,
        cpu=cpu,
        memory=memory,
        workers=workers,
    )
    folder = _folder(out, deployment.model, "k8s")
    path = folder / f"{deployment.app}.yaml"
    path.write_text(yaml.safe_dump_all(exports.kubernetes(deployment), sort_keys=False))
    typer.echo(f"wrote {path}")
    typer.echo(f"the Secret it reads: {exports.secret_command(deployment)}")
    typer.echo(f"then: kubectl apply -f {path}")


@app.command("ray")
def ray_serve(
    ref: RefArgument,
    out: OutOption = None,
    model_option: Annotated[
        list[str] | None,
        typer.Option(
            help="MODEL.SETTING=VALUE per-model override (min_replicas, replica_cpus, ...), "
            "repeatable."
        ),
    ] = None,
    home: HomeOption = None,
) -> None:
    """A Ray Serve config (serve-config.yaml) running the version REF names now on a Ray
    cluster, its replicas sized by the model's knobs, for `dockyard serve --backend ray`."""
    import yaml

    from dockyard.services import exports

    workspace = open_workspace(home, model_options=model_option)
    deployment = exports.describe(workspace, ref)
    folder = _folder(out, deployment.model, "ray")
    path = folder / RAY_CONFIG
    config = exports.ray_config(deployment, workspace.settings)
    header = exports.ray_header(deployment, config, path.name)
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    typer.echo(f"wrote {path}: {deployment.ref} is version {deployment.version} now")
    typer.echo(
        "nothing secret is in it: each Ray node takes DOCKYARD_DATABASE_URL (a shared registry's) "
        "and the bucket's credentials from its environment"
    )
    if registry_home := exports.ray_home(config):
        typer.echo(
            f"its replicas open the registry in {registry_home}: every node must reach that path"
        )
    typer.echo(f"deploy: serve deploy {path} (through Ray's dashboard), or")
    typer.echo(f"        serve run {path} --address HEAD:PORT --non-blocking")
    typer.echo(f"then: {exports.ray_front_command(deployment)}")


def _folder(out: Path | None, model: str, kind: str) -> Path:
    folder = out or Path(f"dockyard-{model}-{kind}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
