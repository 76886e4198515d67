"""Content-Security-Policy: no script runs unless it is one of our own static files."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from portal.settings import BASE_DIR

pytestmark = pytest.mark.django_db

TEMPLATES = BASE_DIR / "templates"


def policy(response) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    header = response["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in header.split(";") if d.strip()}


def test_pages_carry_a_policy_that_blocks_inline_script(admin_client, group):  # type: ignore[no-untyped-def]
    for response in (
        Client().get("/accounts/login/"),
        admin_client.get(f"/g/{group.public_id}/keys/"),
        admin_client.get(f"/g/{group.public_id}/usage/"),
    ):
        assert response.status_code == 200
        directives = policy(response)
        # Scripts only from our origin: an inline <script> or onclick=… is refused by the browser.
        assert directives["script-src"] == ["'self'"]
        assert directives["default-src"] == ["'self'"]
        assert directives["object-src"] == ["'none'"]
        assert directives["base-uri"] == ["'self'"]
        assert directives["frame-ancestors"] == ["'none'"]
        assert "'unsafe-eval'" not in response["Content-Security-Policy"]


def test_only_the_card_pages_allow_stripe_js(admin_client, group, localstripe):  # type: ignore[no-untyped-def]
    page = admin_client.get(f"/g/{group.public_id}/billing/cards/new/")
    assert page.status_code == 200
    directives = policy(page)
    assert directives["script-src"] == ["'self'", localstripe.base_url]
    assert directives["connect-src"] == ["'self'", localstripe.base_url]
    assert localstripe.base_url in directives["frame-src"]
    assert f'<script src="{localstripe.base_url}/js.stripe.com/v3/">' in page.content.decode()
    overview = admin_client.get(f"/g/{group.public_id}/billing/")
    assert policy(overview)["script-src"] == ["'self'"]


def test_templates_have_no_inline_script_handler_or_safe_filter():  # type: ignore[no-untyped-def]
    problems = []
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text()
        for script in re.finditer(r"<script\b([^>]*)>", text):
            if "src=" not in script.group(1) and "application/json" not in script.group(1):
                problems.append(f"{path}: inline <script>")
        if re.search(r"\son[a-z]+\s*=", text):
            problems.append(f"{path}: inline event handler")
        if "javascript:" in text:
            problems.append(f"{path}: javascript: URL")
        if "|safe" in text:
            problems.append(f"{path}: |safe")
    assert not problems, problems


def test_help_text_is_escaped(rf):  # type: ignore[no-untyped-def]
    from django import forms
    from django.template.loader import render_to_string

    class Form(forms.Form):
        name = forms.CharField(help_text='<img src=x onerror="alert(1)">')

    html = render_to_string("portal/_form_fields.html", {"form": Form()})
    assert "&lt;img src=x" in html and "<img src=x" not in html
