"""Who is calling: roles, the actions each role may take, and the principal a request acts as.

Every request and every service call carries a ``Principal`` (name, role, model scope), so it can be
checked here and written as the actor of an audit entry later.
"""

from __future__ import annotations

import enum
import getpass
from collections.abc import Iterable
from dataclasses import dataclass

from dockyard.errors import Forbidden, InvalidInput


class Role(enum.StrEnum):
    """What a key or token is for; see ``ROLE_ACTIONS`` for what each may do."""

    PREDICTOR = "predictor"
    DEPLOYER = "deployer"
    APPROVER = "approver"
    AUDITOR = "auditor"
    ADMIN = "admin"


class Action(enum.StrEnum):
    """A kind of thing a caller does; the permission table maps each route and service to one."""

    READ_SERVER = "read_server"
    """Server metadata and the API docs."""
    READ_MODEL = "read_model"
    """A model's metadata, versions and status."""
    INFER = "infer"
    REGISTER = "register"
    REGISTER_CODE = "register_code"
    """Register a model whose file may run code when loaded (pickle, extra skops types)."""
    MOVE_ALIAS = "move_alias"
    UPDATE_MODEL = "update_model"
    """Change a model's description or tags, archive a version."""
    APPROVE = "approve"
    SIGN = "sign"
    READ_SECURITY = "read_security"
    """Security events and the list of keys (never the keys themselves)."""
    MANAGE_KEYS = "manage_keys"
    """Create, revoke and rotate API keys; rotate the encryption key; create signing keys."""
    READ_METRICS = "read_metrics"
    """Metrics, drift, accuracy and alerts (the dashboard)."""
    READ_PREDICTIONS = "read_predictions"
    """A model's prediction log: the inputs and outputs of its requests."""
    SEND_FEEDBACK = "send_feedback"
    """Attach ground-truth labels to a model's logged predictions."""
    READ_AUDIT = "read_audit"
    """The audit trail, its verification and compliance reports."""
    ERASE_DATA = "erase_data"
    """Erase a data subject's logged records (the right to erasure)."""


MODEL_ACTIONS = frozenset(
    {
        Action.READ_MODEL,
        Action.INFER,
        Action.REGISTER,
        Action.REGISTER_CODE,
        Action.MOVE_ALIAS,
        Action.UPDATE_MODEL,
        Action.APPROVE,
        Action.SIGN,
        Action.READ_PREDICTIONS,
        Action.SEND_FEEDBACK,
    }
)
"""Actions on one model: a principal scoped to some models may take them only on those."""

ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.PREDICTOR: frozenset(
        {Action.READ_SERVER, Action.READ_MODEL, Action.INFER, Action.SEND_FEEDBACK}
    ),
    Role.DEPLOYER: frozenset(
        {
            Action.READ_SERVER,
            Action.READ_MODEL,
            Action.REGISTER,
            Action.MOVE_ALIAS,
            Action.UPDATE_MODEL,
            Action.READ_METRICS,
            Action.READ_PREDICTIONS,
            Action.SEND_FEEDBACK,
        }
    ),
    Role.APPROVER: frozenset(
        {
            Action.READ_SERVER,
            Action.READ_MODEL,
            Action.APPROVE,
            Action.READ_METRICS,
            Action.READ_AUDIT,
        }
    ),
    Role.AUDITOR: frozenset(
        {
            Action.READ_SERVER,
            Action.READ_MODEL,
            Action.READ_SECURITY,
            Action.READ_METRICS,
            Action.READ_PREDICTIONS,
            Action.READ_AUDIT,
        }
    ),
    Role.ADMIN: frozenset(Action),
}
"""The roles: predictor (inference and metadata of its models, labels for its predictions),
deployer (register, move aliases, request promotions, monitoring, the prediction log), approver
(approve or reject promotions; monitoring, the audit trail and reports), auditor (read-only:
everything but inference), admin (keys, erasure and everything)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a request or a service call acts as.

    ``models`` is None for every model, else the names this principal may act on. ``kind`` says
    how it was established: ``key``, ``jwt``, ``local`` (an operating-system user on the home) or
    ``open`` (a server running ``--no-auth``).
    """

    name: str
    role: Role
    models: frozenset[str] | None = None
    kind: str = "key"
    key_id: str = ""

    def may(self, action: Action, model: str | None = None) -> bool:
        """Whether this principal may take ``action`` (on ``model``, for a model action)."""
        if action not in ROLE_ACTIONS[self.role]:
            return False
        return self.models is None or model is None or model in self.models

    def sees(self, model: str) -> bool:
        """Whether ``model`` is in this principal's scope."""
        return self.models is None or model in self.models

    @property
    def actor(self) -> str:
        """How this principal is written as the actor of a change (``key:ci-bot``, ``alice``)."""
        return self.name if self.kind == "local" else f"{self.kind}:{self.name}"


def require(principal: Principal, action: Action, model: str | None = None) -> None:
    """Raise Forbidden unless ``principal`` may take ``action`` (on ``model``)."""
    if principal.may(action, model):
        return
    if action in ROLE_ACTIONS[principal.role]:
        raise Forbidden(f"{principal.actor} is not allowed to use model {model!r}")
    raise Forbidden(f"{principal.actor} (role {principal.role}) may not {action.replace('_', ' ')}")


def parse_role(text: str) -> Role:
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise InvalidInput(
            f"unknown role {text!r}; use one of {', '.join(role.value for role in Role)}"
        ) from None


def parse_scope(models: Iterable[str] | None) -> frozenset[str] | None:
    """A model scope from names (None or nothing given: every model)."""
    names = frozenset(name.strip() for name in models or () if name.strip())
    return names or None


def local_user() -> Principal:
    """The operating-system user running a CLI command on the home: file permissions are the
    boundary there, so it acts as admin, under its own name."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "local"
    return Principal(name=name, role=Role.ADMIN, kind="local")


OPEN = Principal(name="anonymous", role=Role.ADMIN, kind="open")
"""Every caller of a server started with ``--no-auth`` (loopback only)."""
