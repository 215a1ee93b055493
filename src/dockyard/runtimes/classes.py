"""Telling which framework an in-memory object belongs to from its class names alone.

Detection must work without the framework installed, so it reads ``__module__`` and ``__name__``
along the object's MRO instead of importing anything.
"""

from __future__ import annotations


def in_package(module: str, package: str) -> bool:
    """True when ``module`` is ``package`` or under it (``numpy.linalg``, never ``numpyx``)."""
    return module == package or module.startswith(f"{package}.")


def has_base(obj: object, package: str, names: tuple[str, ...] = ()) -> bool:
    """True when a class in ``type(obj).__mro__`` is defined in ``package``.

    With ``names``, that class must also be called one of them (e.g. ``("Module",)`` in ``torch``).
    """
    return any(
        in_package(cls.__module__, package) and (not names or cls.__name__ in names)
        for cls in type(obj).__mro__
    )


def qualified_name(obj: object) -> str:
    """The ``module.Class`` name of an object's type, as recorded in artifact options."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"
