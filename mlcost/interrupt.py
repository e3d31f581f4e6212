"""Stopping the step's own thread from the sampler thread, and noticing SIGTERM.

Two paths, as checked on CPython (integration-facts.md): on the main thread a signal
(``pthread_kill`` + a handler that raises) interrupts even a blocking ``sleep`` at once; on any
other thread only ``PyThreadState_SetAsyncExc`` works, and it lands between bytecodes, so a long C
call (a CUDA synchronize) delays it until the call returns. Handlers we replace are restored.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_INTERRUPT_SIGNAL = signal.SIGUSR1


class StepInterrupted(BaseException):
    """Raised inside the step's body to stop it; the meter turns it into the guardrail's exception.

    A BaseException so that a body's ``except Exception`` cannot swallow the stop.
    """


class Interrupter:
    """Stops the thread that created it. Install on enter, ``restore()`` on exit."""

    def __init__(self) -> None:
        self.thread_id = threading.get_ident()
        self.main = threading.current_thread() is threading.main_thread()
        self._previous: Any = None
        self.uses_signal = False
        if self.main:
            current = signal.getsignal(_INTERRUPT_SIGNAL)
            if current in (signal.SIG_DFL, None):  # never steal a handler the application installed
                self._previous = current
                signal.signal(_INTERRUPT_SIGNAL, self._raise)
                self.uses_signal = True
        if not self.uses_signal:
            log.debug("mlcost: meter not on the main thread; stops land between bytecodes only")

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise StepInterrupted()

    def interrupt(self) -> None:
        if self.uses_signal:
            signal.pthread_kill(self.thread_id, _INTERRUPT_SIGNAL)
        else:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.thread_id), ctypes.py_object(StepInterrupted)
            )

    def restore(self) -> None:
        if self.uses_signal:
            signal.signal(_INTERRUPT_SIGNAL, self._previous if self._previous is not None else signal.SIG_DFL)
            self.uses_signal = False


class TerminationHook:
    """Runs ``on_term`` when SIGTERM arrives, then does what would have happened without us: the
    previous Python handler (Airflow's task runner has one), or exit with status 143."""

    def __init__(self, on_term: Callable[[], None]) -> None:
        self.installed = False
        self._on_term = on_term
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGTERM)
        if self._previous is signal.SIG_IGN:
            return
        signal.signal(signal.SIGTERM, self._handle)
        self.installed = True

    def _handle(self, signum: int, frame: Any) -> None:
        try:
            self._on_term()
        except Exception:  # recording must not stop the termination
            log.exception("mlcost: recording the step on SIGTERM failed")
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        else:
            raise SystemExit(128 + signum)

    def restore(self) -> None:
        if self.installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self.installed = False
