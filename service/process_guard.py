"""A worker that `serve` started dies with `serve`, even when `serve` is SIGKILLed.

An orphaned worker would go on claiming jobs beside the workers of the next `serve`, outside
any supervision. Linux's parent-death signal (prctl PR_SET_PDEATHSIG) has the kernel SIGKILL
the worker when its parent goes; the job it was training then waits out its lease and another
worker resumes it from its checkpoint. A worker started by hand never calls this.

The signal fires when the *thread* that forked the worker ends, not the whole process:
`serve` therefore forks every worker from one thread that outlives them (service/worker_pool.py:
WorkerPool, used by serve and worker --concurrency).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

log = logging.getLogger("service.process_guard")

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# How `serve` tells a worker it started which process to die with.
PARENT_PID_FLAG = "--parent-pid"


class ParentGone(SystemExit):
    """The parent died before this process could ask to follow it: exit rather than orphan."""


def die_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGKILL this process when `parent_pid`, its parent, dies; False where
    the platform cannot (the worker then outlives a killed parent, as one started by hand)."""
    if not sys.platform.startswith("linux"):
        log.warning(
            "no parent-death signal on %s: this worker outlives a killed parent", sys.platform
        )
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(error))
        return False
    # The parent may have died between forking this process and the call above; no signal
    # comes then, but this process has already been handed to init (or a subreaper).
    if os.getppid() != parent_pid:
        raise ParentGone(f"parent process {parent_pid} is gone; this worker exits with it")
    return True
