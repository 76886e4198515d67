"""The Billing page's rate-limit table: each API family's limit at the group's usage tier."""

from __future__ import annotations

import re

from django.urls import reverse

from billing.services import ledger_post
from usage.catalogue import catalogue_sync
from usage.models import AIModel

ROW = re.compile(
    r'<tr><td>(.*?)</td><td class="num">(.*?)</td><td class="num">(.*?)</td>'
    r'<td class="muted">(.*?)</td></tr>'
)


def table(client, group) -> tuple[str, dict[str, tuple[str, str, str]]]:  # type: ignore[no-untyped-def]
    page = client.get(reverse("billing:overview", kwargs={"group_id": group.public_id}))
    text = page.content.decode()
    card = text[text.index("<h2>Rate limits</h2>") :]
    card = card[: card.index("</table>")]
    return card, {label: tuple(rest) for label, *rest in ROW.findall(card)}


def test_the_table_shows_each_familys_limit_for_the_groups_tier(admin_client, group):
    catalogue_sync()
    AIModel.objects.create(name="my-llama", rate_limit_rpm=7)  # no [limits] row: its own
    card, rows = table(admin_client, group)
    assert "Tier 0" in card
    assert rows["sonar (chat completions)"] == ("50", "—", "")
    assert rows["sonar-deep-research (chat completions)"] == ("5", "—", "")
    assert rows["Agent API (all models)"] == ("50", "1", "")
    assert rows["Search API"] == ("—", "50", "")
    assert rows["Async chat completions: get"] == ("6000", "—", "")
    assert rows["Embeddings (both endpoints)"][:2] == ("50", "—")
    assert "Not published by Perplexity" in rows["Embeddings (both endpoints)"][2]
    assert rows["my-llama (chat completions)"] == ("7", "—", "This model's own limit")
    assert not any(label.startswith("perplexity/") for label in rows)  # in the Agent API's

    ledger_post(group=group, amount_micros=300_000_000, kind="purchase", reference="pi_t2")
    card, rows = table(admin_client, group)  # $300 purchased: tier 2
    assert "Tier 2" in card
    assert rows["sonar-deep-research (chat completions)"] == ("20", "—", "")
    assert rows["Agent API (all models)"] == ("500", "8", "")
    assert rows["Search API"] == ("—", "50", "")
    assert rows["my-llama (chat completions)"][0] == "70"  # 7 × tier 2's multiplier
