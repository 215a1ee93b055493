"""``make test-pythons``: the suite on every supported Python installed on this machine.

One session per interpreter in ``PYTHONS`` (the classifiers of ``pyproject.toml``, checked by
``tests/test_packaging.py``); an interpreter that is not installed is skipped, and nox's summary
says which ran and which were skipped. Each session keeps its own virtual environment under
``.nox/`` and runs pytest as ``make test`` does. The pinned CPU build of torch lies on the
machines' disk for Python 3.11 only (PyPI's is a multi-GB CUDA build): the other interpreters get
every extra but torch, and the torch tests skip there, saying so.
"""

from __future__ import annotations

import nox

PYTHONS = ["3.11", "3.12", "3.13"]
WITH_TORCH = {"3.11"}

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite, warnings still errors (pyproject's pytest settings)."""
    extras = "all,test" if session.python in WITH_TORCH else "all-but-torch,test"
    session.install("-e", f".[{extras}]")
    session.run(
        "python",
        "-m",
        "pytest",
        "--numprocesses=auto",
        "--maxprocesses=4",
        "--dist",
        "loadfile",
        *session.posargs,
    )
