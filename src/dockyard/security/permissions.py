"""The one permission table: the action every HTTP route, gRPC method and state-changing service
needs.

A route is written as its method and path template, exactly as the web app declares it; a test
fails when the app has a route this table does not name. ``PUBLIC`` routes need no credentials
(the health probes, so load balancers and orchestrators can probe without a key; the docs pages'
packaged scripts and styles, which a browser fetches without the page's key; the dashboard's page
and assets, which hold no data: the page asks for a key for its data call).
"""

from __future__ import annotations

from dockyard.security.principals import Action

PUBLIC = None
"""The action of a route anyone may call."""

ROUTES: dict[tuple[str, str], Action | None] = {
    ("GET", "/v2/health/live"): PUBLIC,
    ("GET", "/v2/health/ready"): PUBLIC,
    ("GET", "/metrics"): Action.READ_METRICS,
    ("GET", "/v2"): Action.READ_SERVER,
    ("GET", "/v2/"): Action.READ_SERVER,
    ("GET", "/docs"): Action.READ_SERVER,
    ("GET", "/docs/oauth2-redirect"): Action.READ_SERVER,
    ("GET", "/redoc"): Action.READ_SERVER,
    ("GET", "/openapi.json"): Action.READ_SERVER,
    ("GET", "/docs/assets/swagger-ui-bundle.js"): PUBLIC,
    ("GET", "/docs/assets/swagger-ui.css"): PUBLIC,
    ("GET", "/docs/assets/redoc.standalone.js"): PUBLIC,
    ("GET", "/docs/assets/favicon.png"): PUBLIC,
    ("GET", "/dashboard"): PUBLIC,
    ("GET", "/dashboard/assets/dashboard.js"): PUBLIC,
    ("GET", "/dashboard/assets/dashboard.css"): PUBLIC,
    ("GET", "/api/monitoring/overview"): Action.READ_METRICS,
    ("GET", "/v2/models/{name}"): Action.READ_MODEL,
    ("GET", "/v2/models/{name}/versions/{model_version}"): Action.READ_MODEL,
    ("GET", "/v2/models/{name}/ready"): Action.READ_MODEL,
    ("GET", "/v2/models/{name}/versions/{model_version}/ready"): Action.READ_MODEL,
    ("POST", "/v2/models/{name}/infer"): Action.INFER,
    ("POST", "/v2/models/{name}/versions/{model_version}/infer"): Action.INFER,
    ("GET", "/v1/models/{name}"): Action.READ_MODEL,
    ("POST", "/v1/models/{name}:predict"): Action.INFER,
    ("GET", "/api/models"): Action.READ_MODEL,
    ("POST", "/api/models"): Action.REGISTER,
    ("GET", "/api/models/{name}"): Action.READ_MODEL,
    ("PATCH", "/api/models/{name}"): Action.UPDATE_MODEL,
    ("GET", "/api/models/{name}/versions/{version}"): Action.READ_MODEL,
    ("POST", "/api/models/{name}/versions/{version}/archive"): Action.UPDATE_MODEL,
    ("POST", "/api/models/{name}/versions/{version}/unarchive"): Action.UPDATE_MODEL,
    ("PUT", "/api/models/{name}/aliases/{alias}"): Action.MOVE_ALIAS,
    ("DELETE", "/api/models/{name}/aliases/{alias}"): Action.MOVE_ALIAS,
    ("GET", "/api/keys"): Action.READ_SECURITY,
    ("POST", "/api/keys"): Action.MANAGE_KEYS,
    ("DELETE", "/api/keys/{key_id}"): Action.MANAGE_KEYS,
    ("POST", "/api/keys/{key_id}/rotate"): Action.MANAGE_KEYS,
    ("GET", "/api/security/events"): Action.READ_SECURITY,
    ("GET", "/api/models/{name}/predictions"): Action.READ_PREDICTIONS,
    ("POST", "/v2/models/{name}/feedback"): Action.SEND_FEEDBACK,
    ("GET", "/api/alerts"): Action.READ_METRICS,
    ("GET", "/api/models/{name}/drift"): Action.READ_MODEL,
    ("GET", "/api/audit"): Action.READ_AUDIT,
    ("GET", "/api/audit/verify"): Action.READ_AUDIT,
    ("GET", "/api/models/{name}/versions/{version}/policy"): Action.READ_MODEL,
    ("POST", "/api/models/{name}/promotions"): Action.MOVE_ALIAS,
    ("GET", "/api/promotions"): Action.READ_MODEL,
    ("POST", "/api/promotions/{promotion_id}/approve"): Action.APPROVE,
    ("POST", "/api/promotions/{promotion_id}/reject"): Action.APPROVE,
    ("GET", "/api/models/{name}/versions/{version}/card"): Action.READ_MODEL,
    ("PUT", "/api/models/{name}/versions/{version}/card"): Action.UPDATE_MODEL,
    ("GET", "/api/models/{name}/report"): Action.READ_AUDIT,
    ("POST", "/api/data/erase"): Action.ERASE_DATA,
    ("POST", "/api/models/{name}/rollouts"): Action.MOVE_ALIAS,
    ("GET", "/api/models/{name}/rollout"): Action.READ_MODEL,
    ("POST", "/api/models/{name}/rollout/promote"): Action.MOVE_ALIAS,
    ("POST", "/api/models/{name}/rollout/abort"): Action.MOVE_ALIAS,
}
"""Method and path template → the action it takes (``PUBLIC``: none). A route whose template has
``{name}`` acts on that model: a principal scoped to other models is refused (403)."""

RPCS: dict[str, Action | None] = {
    "ServerLive": PUBLIC,
    "ServerReady": PUBLIC,
    "ServerMetadata": Action.READ_SERVER,
    "ModelMetadata": Action.READ_MODEL,
    "ModelReady": Action.READ_MODEL,
    "ModelInfer": Action.INFER,
}
"""Method of the gRPC ``inference.GRPCInferenceService`` → the action it takes, as its REST route
does (``PUBLIC``: none); the model ones act on the model the request names."""

SERVICES: dict[str, Action] = {
    "register": Action.REGISTER,
    "register_code": Action.REGISTER_CODE,
    "set_alias": Action.MOVE_ALIAS,
    "delete_alias": Action.MOVE_ALIAS,
    "archive": Action.UPDATE_MODEL,
    "unarchive": Action.UPDATE_MODEL,
    "update_model": Action.UPDATE_MODEL,
    "sign": Action.SIGN,
    "create_key": Action.MANAGE_KEYS,
    "revoke_key": Action.MANAGE_KEYS,
    "rotate_key": Action.MANAGE_KEYS,
    "rotate_encryption": Action.MANAGE_KEYS,
    "create_signing_key": Action.MANAGE_KEYS,
    "send_feedback": Action.SEND_FEEDBACK,
    "request_promotion": Action.MOVE_ALIAS,
    "approve_promotion": Action.APPROVE,
    "reject_promotion": Action.APPROVE,
    "set_card": Action.UPDATE_MODEL,
    "erase_subject": Action.ERASE_DATA,
    "start_rollout": Action.MOVE_ALIAS,
    "promote_rollout": Action.MOVE_ALIAS,
    "abort_rollout": Action.MOVE_ALIAS,
}
"""State-changing use case → the action its caller needs; each checks it with ``require``."""
