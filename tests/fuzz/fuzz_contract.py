"""The contract every parser keeps with bad input (issue 16), as one assertion.

A parser given anything returns a valid result or raises an mlcost ``ConfigError`` whose message
names the source (the file, or the keyword); it never raises another exception and never takes
longer than a bound. Memory is bounded in the subprocess regression tests
(``test_reproducers.py``), where an address-space limit can be set without touching pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from mlcost.errors import ConfigError

T = TypeVar("T")

TIME_BOUND_S = 5.0  # per example; ~100x what a sane input takes, on a loaded two-core machine


def holds(call: Callable[[], T], *, names: str | None = None, bound_s: float = TIME_BOUND_S) -> T | None:
    """Run ``call``: return its result, or None after a ConfigError that mentions ``names``
    (a path or a keyword). Any other exception propagates, and so fails the property."""
    started = time.perf_counter()
    try:
        result: Any = call()
    except ConfigError as e:
        result = None
        if names is not None:
            assert names in str(e), f"the error does not name {names!r}: {e}"
        assert str(e).strip(), "an error without a message"
    elapsed = time.perf_counter() - started
    assert elapsed < bound_s, f"took {elapsed:.1f} s (bound {bound_s} s)"
    return result
