"""Seed the private deployment: the fake upstream's model, 5 groups with credits, 50 keys.

python -m tests.reliability.seed UPSTREAM_URL   (prints the keys' secrets as JSON)
python -m tests.reliability.seed spend UPSTREAM_URL   (test_spend_bound's model, groups and
    keys, printed as JSON: see spend())
"""

from __future__ import annotations

import json
import os
import sys


def main(upstream: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from accounts.models import User
    from billing.services import credits_grant
    from groups.services import api_group_create
    from keys.services import api_key_create
    from usage.catalogue import catalogue_sync
    from usage.models import AIModel

    catalogue_sync()
    sonar = AIModel.objects.get(name="sonar")
    AIModel.objects.update_or_create(
        name="bench-model",
        defaults={
            "enabled": True,
            "upstream_base_url": upstream,
            "upstream_model": "bench-model",
            **{
                f: getattr(sonar, f)
                for f in (
                    "input_per_m",
                    "output_per_m",
                    "search_per_k",
                    "request_low_per_k",
                    "request_medium_per_k",
                    "request_high_per_k",
                )
            },  # fmt: skip
            "rate_limit_rpm": 100_000_000,  # these tests measure survival, not the limiter
        },
    )
    secrets = []
    for g in range(5):
        user, _ = User.objects.get_or_create(email=f"load-{g}@reliability.example")
        group = api_group_create(creator=user, name=f"Load {g}")
        credits_grant(
            group=group, amount_micros=1_000_000_000_000, reason="reliability tests",
            reference=f"reliability:{group.public_id}",
        )  # fmt: skip
        secrets += [api_key_create(group=group, name=f"load {k}").secret for k in range(10)]
    print(json.dumps(secrets))


# test_spend_bound's model: the fake upstream reports 40 prompt and 120 completion tokens, one
# search, low context; here that costs 40 × 25 + 120 × 400 + the 1,000 fee = 50,000 µ$.
SPEND_MODEL = "bench-priced"
SPEND_PRICES = {
    "input_per_m": 25_000_000, "output_per_m": 400_000_000, "search_per_k": 0,
    "request_low_per_k": 1_000_000, "request_medium_per_k": 1_000_000,
    "request_high_per_k": 1_000_000,
}  # fmt: skip


def spend(upstream: str, credit: int, keys: int, budget: int) -> None:
    """SPEND_MODEL on `upstream`; a group holding exactly `credit` µ$ with `keys` keys; another
    group (with plenty of credit) whose one key has a hard monthly budget of `budget` µ$."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from accounts.models import User
    from billing.budgets import budget_create
    from billing.services import credits_grant
    from groups.services import api_group_create
    from keys.services import api_key_create
    from usage.models import AIModel

    AIModel.objects.update_or_create(
        name=SPEND_MODEL,
        defaults={"enabled": True, "upstream_base_url": upstream, "upstream_model": SPEND_MODEL,
                  **SPEND_PRICES, "rate_limit_rpm": 100_000_000},
    )  # fmt: skip
    user, _ = User.objects.get_or_create(email="spend@reliability.example")
    group = api_group_create(creator=user, name="Spend bound")
    credits_grant(group=group, amount_micros=credit, reason="spend bound test",
                  reference=f"reliability:{group.public_id}")  # fmt: skip
    secrets = [api_key_create(group=group, name=f"spend {k}").secret for k in range(keys)]
    other = api_group_create(creator=user, name="Key budget")
    credits_grant(group=other, amount_micros=1_000_000_000, reason="spend bound test",
                  reference=f"reliability:{other.public_id}")  # fmt: skip
    capped = api_key_create(group=other, name="Capped")
    hard = budget_create(group=other, api_key=capped.key, amount_micros=budget, window="monthly")
    print(json.dumps({"model": SPEND_MODEL, "group_id": group.pk, "secrets": secrets,
                      "budget_group_id": other.pk, "budget_key_id": capped.key.pk,
                      "budget_secret": capped.secret, "budget_id": hard.pk}))  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1] == "spend":
        spend(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main(sys.argv[1])
