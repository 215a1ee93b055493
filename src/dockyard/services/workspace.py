"""The Workspace: one Dockyard home opened for use: registry, artifact store, runtime loading.

Every front end (CLI, HTTP management API, Python API) opens one from Settings and hands it to the
use cases in this package; it is the only place that joins the registry and the runtimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from dockyard.config import Settings
from dockyard.governance.policy_changes import record_policy
from dockyard.home import Home, process_is_alive
from dockyard.registry.artifacts import ArtifactStore, LocalArtifactStore
from dockyard.registry.records import ArtifactRef, ModelVersion
from dockyard.registry.refs import parse_ref
from dockyard.registry.s3_artifacts import S3ArtifactStore
from dockyard.registry.store import RegistryStore
from dockyard.runtimes.base import LoadOptions, Runtime
from dockyard.runtimes.detect import load_runtime
from dockyard.security.apikeys import KeyHasher
from dockyard.security.events import EventLog
from dockyard.security.keystore import KeyStore
from dockyard.security.principals import local_user
from dockyard.services.staging import sweep


def open_artifacts(settings: Settings, home: Home) -> LocalArtifactStore | S3ArtifactStore:
    """The artifact store ``settings`` name: the home's ``artifacts`` folder, or the shared
    bucket of ``artifact_url`` read through the home's ``artifacts-cache``."""
    if not settings.artifact_url:
        return LocalArtifactStore(home.artifacts)
    return S3ArtifactStore(
        settings.artifact_url,
        home.artifacts_cache,
        endpoint_url=settings.s3_endpoint_url,
        timeout_s=settings.s3_timeout_s,
    )


@dataclass
class Workspace:
    """A Dockyard home with its database and artifact store."""

    settings: Settings
    home: Home
    artifacts: ArtifactStore

    @classmethod
    def open(cls, settings: Settings) -> Workspace:
        """Open the home, first removing what processes killed mid-registration left in it, and
        record the ``[governance]`` policy in the audit trail when it changed (as the local
        user: whoever runs the process brings its configuration)."""
        home = Home(settings.home).ensure()
        artifacts = open_artifacts(settings, home)
        workspace = cls(settings=settings, home=home, artifacts=artifacts)
        try:
            sweep(home.tmp, artifacts, workspace.uses_artifact)
            artifacts.remove_stale_temps(process_is_alive)
            record_policy(workspace.store.engine, settings, local_user())
        except BaseException:
            workspace.close()
            raise
        return workspace

    def close(self) -> None:
        """Close the registry's pooled database connections. Whoever opens a workspace closes
        it when done (a CLI command, the Python API, ``serve`` on its way out): a connection
        left to the collector holds its file open until a collection, and Python 3.13 warns
        about it. The workspace stays usable: a later query opens a new connection."""
        if "store" in self.__dict__:
            self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @cached_property
    def store(self) -> RegistryStore:
        """The registry, opened (and migrated) on first use."""
        return RegistryStore.open(self.settings.effective_database_url())

    @cached_property
    def keys(self) -> KeyStore:
        """The API keys, hashed under the deployment's hash key."""
        return KeyStore(self.store.engine, self.hasher)

    @cached_property
    def hasher(self) -> KeyHasher:
        return KeyHasher.open(self.home.secrets, self.settings.api_key_secret)

    @cached_property
    def events(self) -> EventLog:
        """Security events (auth failures, refusals, rate limits, anomalies)."""
        return EventLog(self.store.engine)

    def after_fork(self) -> None:
        """In a forked worker: drop the parent's pooled database connections (never share them)."""
        if "store" in self.__dict__:
            self.store.engine.dispose(close=False)

    def uses_artifact(self, digest: str) -> bool:
        """Whether a registered version is stored as the artifact ``digest``."""
        return self.store.uses_artifact(digest)

    def resolve(self, ref: str) -> ModelVersion:
        """The version a reference such as ``fraud@production`` or ``fraud:3`` names."""
        return self.store.resolve(parse_ref(ref))

    def load(self, version: ModelVersion) -> Runtime:
        """Load a registered version's runtime."""
        return self.load_artifact(
            version.framework, version.artifact, version.allow_pickle, version.trusted_types
        )

    def load_artifact(
        self,
        framework: str,
        artifact: ArtifactRef,
        allow_pickle: bool = False,
        trusted_types: tuple[str, ...] = (),
    ) -> Runtime:
        """Load a stored artifact, verifying its digest first (every load, not only the first)."""
        path = self.artifacts.verified_path(artifact.digest)
        options = LoadOptions(
            format=artifact.format,
            options=artifact.options,
            allow_pickle=allow_pickle,
            trusted_types=trusted_types,
            cache_dir=self.home.tmp,
        )
        return load_runtime(framework, path, options)
