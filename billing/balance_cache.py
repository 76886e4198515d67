"""The gateway's view of a group's balance, kept in Redis.

The gateway checks `portal:bal:<group id>` before each call and decrements it by the cost of
each metered request (the database stays the truth). Anything else that changes a balance —
purchases, grants, refunds — deletes the key after commit so the gateway reloads it from
PostgreSQL; the gateway also fills the key with an expiry of `ACCOUNT_TTL` seconds
(`gateway/admission.py`), so it can never drift for long.

`portal:topup:<group id>` is the gateway's note that a debit just took the balance under the auto
top-up threshold (it queues one top-up per 60 s). A credit clears it too: the next crossing is a
new one and queues the next top-up at once, instead of after the minute's credit watch (a group
that spends a top-up within a minute would otherwise wait with its keys blocked).
"""

from __future__ import annotations

from core.redis import safe_delete


def key(group_id: int) -> str:
    return f"portal:bal:{group_id}"


def top_up_key(group_id: int) -> str:
    return f"portal:topup:{group_id}"


def forget(*, group_id: int) -> None:
    safe_delete(key(group_id), top_up_key(group_id))
