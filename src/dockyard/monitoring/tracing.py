"""OpenTelemetry traces of inference (extra ``otel``): a span per request, a span per batch linked
to the requests it served, and the model's predict call inside the batch, sent over OTLP/HTTP by a
thread of each worker.

OpenTelemetry is imported only once traces are on. With them off nothing calls in here per
request: the hot path chose its untraced method once, and the batcher finds ``ACTIVE`` None.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import Token
from typing import TYPE_CHECKING, Any, TypeVar

from dockyard.config import Settings
from dockyard.errors import MissingExtra

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Span, SpanContext

logger = logging.getLogger(__name__)

SERVICE_NAME = "dockyard"
REQUEST_SPAN = "dockyard.request"
BATCH_SPAN = "dockyard.batch"
PREDICT_SPAN = "dockyard.predict"
MODEL = "dockyard.model"
VERSION = "dockyard.version"
ROUTE = "dockyard.route"
REQUEST_ID = "dockyard.request_id"
ROWS = "dockyard.rows"
REQUESTS = "dockyard.requests"
STATUS = "http.response.status_code"
ERROR_TYPE = "error.type"
PROPAGATED = (b"traceparent", b"tracestate")
"""The W3C Trace Context headers a request's span continues from."""
FLUSH_TIMEOUT_S = 5.0
"""A stopping worker waits at most this long for its last spans to be sent (a collector that is
down must not hold the stop up)."""
T = TypeVar("T")

ACTIVE: Traces | None = None
"""This process's traces once started (in a worker, by the app's lifespan), else None. The
batcher looks here rather than being handed them: deployments are built before the fork (in the
supervisor, which never traces) and swapped in while serving."""


def check_installed() -> None:
    """MissingExtra when the ``otel`` extra is not installed (``serve`` asks before it forks)."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise MissingExtra("OpenTelemetry (for traces)", "otel") from None


class Traces:
    """One worker's tracer and exporter. ``start`` runs in the worker (the exporter's thread must
    be born after the fork), ``close`` sends what is still queued."""

    def __init__(self, endpoint: str, sample: float) -> None:
        """``endpoint``: the OTLP/HTTP traces URL (empty: OpenTelemetry's variables decide);
        ``sample``: the share of requests without a ``traceparent`` that are traced."""
        self.endpoint = endpoint
        self.sample = sample
        self._provider: TracerProvider | None = None

    @classmethod
    def for_worker(cls, settings: Settings) -> Traces | None:
        """The traces ``settings`` ask for (``traces``), else None."""
        if not settings.traces:
            return None
        check_installed()
        return cls(settings.otlp_endpoint, settings.trace_sample)

    def start(self) -> None:
        """Create the tracer, its sampler and the OTLP exporter's batching thread."""
        global ACTIVE
        from opentelemetry import context, trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        resource = Resource.create(
            {
                "service.name": SERVICE_NAME,
                "service.version": _version(),
                "process.pid": os.getpid(),
            }
        )
        # shutdown_on_exit: a worker leaves through os._exit, so close() flushes instead.
        provider = TracerProvider(
            sampler=_sampler(self.sample), resource=resource, shutdown_on_exit=False
        )
        exporter = OTLPSpanExporter(endpoint=self.endpoint or None)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        self._provider = provider
        self._tracer = provider.get_tracer("dockyard")
        self._extract = TraceContextTextMapPropagator().extract
        self._attach = context.attach
        self._detach = context.detach
        self._in_context = trace.set_span_in_context
        self._use_span = trace.use_span
        self._current = trace.get_current_span
        self._root = context.Context()
        self._link = trace.Link
        self._server = trace.SpanKind.SERVER
        self._error = trace.StatusCode.ERROR
        ACTIVE = self

    async def close(self) -> None:
        """Stop tracing and send the spans still queued, waiting at most FLUSH_TIMEOUT_S."""
        global ACTIVE
        provider, self._provider = self._provider, None
        if ACTIVE is self:
            ACTIVE = None
        if provider is None:
            return
        # A thread of its own, not the loop's executor: a worker's loop waits for that one's
        # threads before it exits, and a collector that does not answer must not hold it up.
        flush = threading.Thread(target=provider.shutdown, name="traces-flush", daemon=True)
        flush.start()
        await asyncio.to_thread(flush.join, FLUSH_TIMEOUT_S)
        if flush.is_alive():
            logger.warning("traces: the last spans were not sent within %g s", FLUSH_TIMEOUT_S)

    def request(
        self, headers: Iterable[tuple[bytes, bytes]], route: str, model: str
    ) -> tuple[Span, Token[Context]]:
        """Start an inference request's span and make it the current one (the batcher links its
        batch to it); its parent is the caller's ``traceparent``, if any. Returns the span and
        the token ``answered`` needs."""
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in headers
            if key in PROPAGATED
        }
        parent = self._extract(carrier) if carrier else self._root
        span = self._tracer.start_span(
            REQUEST_SPAN, parent, kind=self._server, attributes={ROUTE: route, MODEL: model}
        )
        return span, self._attach(self._in_context(span))

    def answered(
        self,
        span: Span,
        token: Token[Context],
        status: int,
        version: int | None,
        rows: int | None,
        request_id: str,
        error: str | None,
    ) -> None:
        """End a request's span: the status sent, the version that answered (or would have),
        the rows, the request id; an error status and ``error.type`` when it failed."""
        try:
            if span.is_recording():
                attributes: dict[str, str | int] = {STATUS: status, REQUEST_ID: request_id}
                if version is not None:
                    attributes[VERSION] = version
                if rows is not None:
                    attributes[ROWS] = rows
                if error is not None:
                    attributes[ERROR_TYPE] = error
                    span.set_status(self._error, error)
                span.set_attributes(attributes)
        finally:
            self._detach(token)
            span.end()

    def current(self) -> SpanContext:
        """The current request's span, for a batch to link to (read where the request queues)."""
        return self._current().get_span_context()

    def batch(
        self, requests: Sequence[SpanContext | None] | None, rows: int
    ) -> AbstractContextManager[Span]:
        """The span of one batch, current while it runs: a root, linked to the spans of the
        requests it serves (``requests``; None: the current request alone), recorded when any of
        them is."""
        contexts = [self._current().get_span_context()] if requests is None else requests
        links = [
            self._link(linked)
            for linked in contexts
            if linked is not None and linked.trace_flags.sampled
        ]
        count = len(contexts)
        return self._interruptible(
            self._tracer.start_span(
                BATCH_SPAN, self._root, links=links, attributes={ROWS: rows, REQUESTS: count}
            )
        )

    def predict(
        self, predict: Callable[[Any, tuple[str, ...]], T], x: Any, outputs: tuple[str, ...]
    ) -> T:
        """``predict(x, outputs)`` in a span of its own, a child of the batch's."""
        with self._interruptible(self._tracer.start_span(PREDICT_SPAN)):
            return predict(x, outputs)

    @contextmanager
    def _interruptible(self, span: Span) -> Iterator[Span]:
        """``span`` current while the block runs, ended (so sent) when the block returns or
        raises an Exception. A block interrupted by anything else leaves it unended, never sent:
        a batch stopped by the event loop's time limit runs again on the model's thread, and
        that run is the one recorded (each request is served by one batch)."""
        try:
            with self._use_span(span, end_on_exit=False):
                yield span
        except Exception:
            span.end()
            raise
        span.end()


def _sampler(ratio: float) -> Sampler:
    """Requests: the caller's decision when it sent one, else ``ratio`` of them. Batches: recorded
    when a request they serve is (their links say which), so no batch is recorded for requests
    that were not, nor left out when one was; a predict span follows its batch."""
    from opentelemetry.sdk.trace.sampling import (
        Decision,
        ParentBased,
        Sampler,
        SamplingResult,
        TraceIdRatioBased,
    )

    requests = ParentBased(TraceIdRatioBased(ratio))

    class Batches(Sampler):
        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: Any = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            if name == BATCH_SPAN:
                recorded = Decision.RECORD_AND_SAMPLE if links else Decision.DROP
                return SamplingResult(recorded, attributes if links else None)
            return requests.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return f"DockyardSampler{{requests=ParentBased(TraceIdRatioBased({ratio}))}}"

    return Batches()


def _version() -> str:
    try:
        return importlib.metadata.version("dockyard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
