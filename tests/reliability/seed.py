"""Seed the private deployment: the fake upstream's model, 5 groups with credits, 50 keys.

python -m tests.reliability.seed UPSTREAM_URL   (prints the keys' secrets as JSON)
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


if __name__ == "__main__":
    main(sys.argv[1])
