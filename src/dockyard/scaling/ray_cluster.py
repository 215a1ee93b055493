"""Joining the Ray cluster of the ``ray`` backend, once per serving process, on loopback when local.

Ray, left to itself, talks between its processes over the machine's first non-loopback address,
even for a cluster on one machine. When the cluster is this machine's (no address, ``auto``, or a
loopback head), the process joins it with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which keeps
Ray's node address at 127.0.0.1 (the head must have been started with
``--node-ip-address=127.0.0.1`` under the same variable), and with usage statistics off. Ray's
own HTTP proxy is never started: requests reach the replicas through the serving process's
deployment handles (``ray_runtime``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from typing import Any

from dockyard.config import Settings
from dockyard.errors import MissingExtra, Unavailable

logger = logging.getLogger(__name__)

LOCAL_CLUSTER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
"""What a process joining (or starting) a Ray cluster on this machine needs: Ray's node address
stays 127.0.0.1, and nothing is reported to Ray's usage statistics server."""
NAMESPACE = "dockyard"
RAY_LOGGERS = ("ray", "ray.serve")

_lock = threading.Lock()
_joined: str | None = None


def is_local_address(address: str) -> bool:
    """Whether ``address`` (a ``ray_address`` setting) names a cluster on this machine."""
    if address in ("", "auto"):
        return True
    if address.startswith("ray://"):
        address = address.removeprefix("ray://")
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def import_ray(address: str) -> Any:
    """``ray`` and ``ray.serve``, or MissingExtra naming the extra to install. gRPC, under Ray,
    logs only errors: its notes (one at every fork of the monitoring process) are not Dockyard's
    log lines. For a cluster on this machine (``address``, a ``ray_address`` setting), Ray is
    pinned to loopback first: it reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, at import (set
    later, 127.0.0.1 given to ``ray.init`` still resolves to the machine's first address)."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if is_local_address(address):
        for name, value in LOCAL_CLUSTER_ENV.items():
            os.environ.setdefault(name, value)
    try:
        import ray
        from ray import serve  # noqa: F401  (Serve's controller API, checked here once)
    except ImportError as exc:
        raise MissingExtra("Ray Serve", "ray") from exc
    return ray


def join(settings: Settings) -> Any:
    """Connect this process to ``settings.ray_address`` (start a Ray instance of its own when
    empty) and start Ray Serve there without its HTTP proxy; returns ``ray.serve``. Idempotent."""
    global _joined
    address = settings.ray_address
    with _lock:
        if _joined is not None:
            if _joined != address:
                raise Unavailable(
                    f"this process is joined to Ray at {_joined or 'its own instance'}, not "
                    f"{address}"
                )
            from ray import serve

            return serve
        ray = import_ray(address)
        from ray import serve

        _route_logs()

        options: dict[str, Any] = {
            "namespace": NAMESPACE,
            "log_to_driver": False,
            "logging_level": logging.WARNING,
            "configure_logging": False,
        }
        if address:
            options["address"] = address
        else:  # "local": a new instance, never the machine's latest cluster nor RAY_ADDRESS's
            options.update(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
        try:
            if not ray.is_initialized():
                ray.init(**options)
            serve.start(proxy_location="Disabled")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise Unavailable(
                f"cannot use the Ray cluster at {address or 'a new local instance'}: {exc}"
            ) from exc
        _joined = address
        logger.info("joined Ray at %s", address or "a local instance of this server's own")
        return serve


def _route_logs() -> None:
    """Ray's records in this process go through Dockyard's handlers (its text or JSON lines),
    warnings and worse only: Ray gives its loggers handlers of their own at import."""
    for name in RAY_LOGGERS:
        ray_logger = logging.getLogger(name)
        for handler in list(ray_logger.handlers):
            ray_logger.removeHandler(handler)
        ray_logger.propagate = True
        ray_logger.setLevel(logging.WARNING)


def leave() -> None:
    """Disconnect this process from Ray (stopping the instance it started, if it started one)."""
    global _joined
    with _lock:
        if _joined is None:
            return
        import ray

        ray.shutdown()
        _joined = None
