"""Usage by end user and tag: the rules for the values a request may carry (issue 19, part 7).

A request may name its **end user** (OpenAI's `user` field on chat completions, async chat
completions, the Agent API and embeddings; `safety_identifier` where `user` is absent) and carry
**tags**: the `X-Portal-Tags: team=search,env=prod` header on every API, and on the Agent API its
`metadata` pairs. Both are stored on the usage event as given (`end_user`, `tags`), and rolled up
with a cap per group and UTC day (usage.rollups: ATTRIBUTION_*), beyond which they roll up as
OTHER. The parsing is strict and cheap (no regex backtracking, one pass): any malformed value is a
400 naming the header or field, before anything is admitted or charged.
"""

from __future__ import annotations

from typing import Any

MAX_TAGS = 10  # per request, header and metadata together
MAX_TAG_KEY = 32
MAX_TAG_VALUE = 64
MAX_END_USER = 128
TAG_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")
TAGS_HEADER = "X-Portal-Tags"
TAGS_HEADER_BYTES = TAGS_HEADER.lower().encode()

# The rollup buckets: values beyond the cap, and (in breakdowns) requests without a value.
OTHER = "(other)"
NONE = "(none)"


class AttributionError(ValueError):
    """A malformed end user or tag: the message and the field (or header) at fault."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def valid_tag_part(text: str, limit: int) -> bool:
    return 0 < len(text) <= limit and all(c in TAG_CHARS for c in text)


def tag_rule() -> str:
    return (
        f"at most {MAX_TAGS} tags, each key=value: keys of 1–{MAX_TAG_KEY} and values of "
        f"1–{MAX_TAG_VALUE} characters from A–Z a–z 0–9 _ . : -"
    )


def parse_tags_header(raw: str) -> dict[str, str]:
    """`team=search, env=prod` → {"team": "search", "env": "prod"}; AttributionError otherwise.

    Spaces around items are allowed; an empty item (or header) and a key given twice are refused.
    """
    tags: dict[str, str] = {}
    if len(raw) > MAX_TAGS * (MAX_TAG_KEY + MAX_TAG_VALUE + 3):
        raise AttributionError(f"The {TAGS_HEADER} header is too long: {tag_rule()}.", TAGS_HEADER)
    for item in raw.split(","):
        item = item.strip(" ")
        key, eq, value = item.partition("=")
        if (
            not eq
            or not valid_tag_part(key, MAX_TAG_KEY)
            or not valid_tag_part(value, MAX_TAG_VALUE)
        ):
            raise AttributionError(
                f"The {TAGS_HEADER} header is malformed at “{item[:100]}”: {tag_rule()}.",
                TAGS_HEADER,
            )
        if key in tags:
            raise AttributionError(
                f"The {TAGS_HEADER} header gives the tag “{key}” twice.", TAGS_HEADER
            )
        tags[key] = value
    if len(tags) > MAX_TAGS:
        raise AttributionError(
            f"The {TAGS_HEADER} header has too many tags: {tag_rule()}.", TAGS_HEADER
        )
    return tags


MAX_METADATA = 16  # OpenAI's metadata rules: 16 pairs, keys ≤ 64, values ≤ 512 characters
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


def merge_metadata(tags: dict[str, str], metadata: Any, param: str = "metadata") -> dict[str, str]:
    """The header's tags with the Agent API's `metadata` pairs that are tags too.

    `metadata` itself follows OpenAI's rules (an object of at most 16 string pairs, keys up to 64
    and values up to 512 characters; otherwise a 400 naming it). Its pairs that also fit the tag
    rules become tags, the header's winning a key both set, up to MAX_TAGS in all; the others
    (free text such as {"note": "call back Monday"}) are still sent upstream, just not tags.
    """
    if metadata is None:
        return tags
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA:
        raise AttributionError(
            f"“{param}” must be an object of at most {MAX_METADATA} string pairs.", param
        )
    merged = dict(tags)
    for key, value in metadata.items():
        if not isinstance(value, str) or not 0 < len(key) <= MAX_METADATA_KEY \
                or len(value) > MAX_METADATA_VALUE:  # fmt: skip
            raise AttributionError(
                f"“{param}” pairs are strings: keys of 1–{MAX_METADATA_KEY} and values of up "
                f"to {MAX_METADATA_VALUE} characters.",
                f"{param}.{str(key)[:MAX_METADATA_KEY]}",
            )
        if key in merged or len(merged) >= MAX_TAGS:
            continue
        if valid_tag_part(key, MAX_TAG_KEY) and valid_tag_part(value, MAX_TAG_VALUE):
            merged[key] = value
    return merged


def parse_end_user(body: dict[str, Any], prefix: str = "") -> str | None:
    """The end user a body names: `user`, else `safety_identifier`; None when neither is set.

    Stored as given: 1–MAX_END_USER printable characters (send an opaque or hashed id, as OpenAI
    advises; the portal shows it to the group's members).
    """
    found = None
    for name in ("user", "safety_identifier"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not 0 < len(value) <= MAX_END_USER \
                or not value.isprintable():  # fmt: skip
            raise AttributionError(
                f"“{prefix}{name}” must be a string of 1–{MAX_END_USER} printable characters.",
                prefix + name,
            )
        found = found or value
    return found


def parse_tag_filter(text: str) -> tuple[str, str]:
    """A `key=value` tag filter (the Usage Metrics page, the Management API)."""
    key, eq, value = text.partition("=")
    if not eq or not valid_tag_part(key, MAX_TAG_KEY) or not valid_tag_part(value, MAX_TAG_VALUE):
        raise AttributionError(f"“tag” must be key=value: {tag_rule()}.", "tag")
    return key, value
