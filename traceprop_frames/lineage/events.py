"""Step events: the one hook through which lineage leaves the library (OpenLineage, MLflow, ...).

The layers mark the functions that build lineage with :func:`lineage_step` — a pandas operation that rebuilds
rows, one SQL statement, a training run, an erasure. Listeners subscribed with :func:`subscribe` hear
``("START" | "COMPLETE" | "FAIL", StepEvent)`` for each call; with no listener the decorator costs one
list check. The core never imports an integration: integrations import this module and subscribe.

A listener that raises never breaks the user's computation: the exception is turned into a
:class:`~traceprop_frames.errors.LineageEmitWarning` (the error message says which listener failed).
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from traceprop_frames.errors import LineageEmitWarning

_listeners: list[Callable[[str, StepEvent], None]] = []
_seq = itertools.count()


@dataclass
class StepEvent:
    """One call of a step: ``kind`` (``"pandas.merge"``, ``"sql.statement"``, ``"train"``, ``"erase"``),
    the call's arguments, and after it, its result or exception. ``id`` is unique per call in this
    process; ``state`` is free for listeners to keep per-call data between START and COMPLETE/FAIL."""

    kind: str
    args: tuple
    kwargs: dict
    id: int = field(default_factory=lambda: next(_seq))
    result: object = None
    error: BaseException | None = None
    state: dict = field(default_factory=dict)


def subscribe(listener: Callable[[str, StepEvent], None]) -> None:
    """Call ``listener(event_type, step_event)`` around every step (idempotent).

    Examples
    --------
    >>> from traceprop_frames.lineage import events
    >>> seen = []
    >>> listener = lambda kind, ev: seen.append((kind, ev.kind))
    >>> events.subscribe(listener)
    >>> events.lineage_step("demo")(lambda x: x + 1)(1)
    2
    >>> events.unsubscribe(listener)
    >>> seen
    [('START', 'demo'), ('COMPLETE', 'demo')]
    """
    if listener not in _listeners:
        _listeners.append(listener)


def unsubscribe(listener: Callable[[str, StepEvent], None]) -> None:
    """Stop calling ``listener`` (no error if it was not subscribed)."""
    if listener in _listeners:
        _listeners.remove(listener)


def listening() -> bool:
    """True if any listener is subscribed."""
    return bool(_listeners)


def _notify(event_type: str, ev: StepEvent) -> None:
    for listener in tuple(_listeners):
        try:
            listener(event_type, ev)
        except Exception as e:  # a broken emitter must not break the pipeline
            warnings.warn(
                f"lineage listener {listener!r} failed on {event_type} {ev.kind}: {type(e).__name__}: {e}; "
                "the step itself ran normally. Fix or unsubscribe the listener.",
                LineageEmitWarning,
                stacklevel=3,
            )


def lineage_step(kind: str):
    """Decorator: notify listeners before the call (START) and after it (COMPLETE or FAIL).

    Nested steps (a training run calling a pandas step) each get their own events. Also available under
    its earlier name ``step`` (not to be confused with ``tpf.op_group``, which labels tensor operations).
    """

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            if not _listeners:
                return fn(*args, **kwargs)
            ev = StepEvent(kind, args, kwargs)
            _notify("START", ev)
            try:
                ev.result = fn(*args, **kwargs)
            except BaseException as e:
                ev.error = e
                _notify("FAIL", ev)
                raise
            _notify("COMPLETE", ev)
            return ev.result

        return inner

    return wrap


step = lineage_step  # the earlier name, kept: code written against it keeps working
