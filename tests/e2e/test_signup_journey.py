"""A person signs up in Chromium, verifies through the mailed link, signs in, sees the console."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_sign_up_verify_sign_in_and_see_console(live_server, smtp_server, new_page, output_dir):
    page = new_page()
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url
    page.screenshot(path=output_dir / "01-login.png")

    page.get_by_role("link", name="Sign up").first.click()
    page.get_by_label("Full name").fill("Tess Lead")
    page.get_by_label("Email").fill("tess@example.com")
    page.get_by_label("Password:", exact=True).fill("a-long-unique-passphrase")
    page.get_by_label("Password (again)").fill("a-long-unique-passphrase")
    page.screenshot(path=output_dir / "02-signup.png")
    page.get_by_role("button", name="Sign Up").click()
    page.wait_for_url("**/accounts/confirm-email/")
    assert "Verify Your Email Address" in page.content()

    mail = smtp_server.wait_for(to="tess@example.com", subject_contains="Confirm")
    link = next(u for u in smtp_server.links(mail) if "/accounts/confirm-email/" in u)
    page.goto(link)
    page.get_by_role("button", name="Confirm").click()
    # Verified and signed in: a new user is guided to create an API group.
    page.wait_for_url("**/groups/new/")
    page.screenshot(path=output_dir / "03-create-group.png")
    page.get_by_label("Organization name").fill("Tess Labs")
    page.get_by_role("button", name="Create API group").click()
    page.wait_for_url("**/usage/")

    # Sign out and back in with the password.
    page.get_by_label("Account menu").click()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/accounts/login/")
    page.get_by_label("Email").fill("tess@example.com")
    page.get_by_label("Password").fill("a-long-unique-passphrase")
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url("**/usage/")

    sidebar = page.get_by_role("navigation")
    for label in ["API Group", "Billing", "API Keys", "Members", "Usage Metrics"]:
        assert sidebar.get_by_role("link", name=label).is_visible()
    assert page.get_by_test_id("current-group").inner_text() == "Tess Labs"
    page.screenshot(path=output_dir / "04-console.png", full_page=True)
