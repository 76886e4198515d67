"""Fault injection for the reliability tests: pauses at named points, off unless configured.

Set PORTAL_FAULTS="after_charge=30" (name=seconds, comma-separated) in a process's environment to
make it sleep at that point, so a test can kill it there. Production never sets it.
"""

from __future__ import annotations

import os
import time


def pause(point: str) -> None:
    spec = os.environ.get("PORTAL_FAULTS")
    if not spec:
        return
    for item in spec.split(","):
        name, _, seconds = item.partition("=")
        if name.strip() == point:
            time.sleep(float(seconds or 0))
