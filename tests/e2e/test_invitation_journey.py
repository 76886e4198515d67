"""An Admin invites a teammate; the teammate joins through the e-mailed link in a second browser."""

from __future__ import annotations

import re

import pytest

from tests.factories import GroupFactory, MembershipFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def sign_in(page, base: str, email: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign In").click()


def test_admin_invites_teammate_who_joins_as_member(
    live_server, smtp_server, new_page, output_dir, settings, password
):
    settings.SITE_URL = live_server.url
    group = GroupFactory(name="Orbit Labs")
    admin = MembershipFactory(group=group, role="admin").user

    lead = new_page()
    sign_in(lead, live_server.url, admin.email, password)
    lead.goto(f"{live_server.url}/g/{group.public_id}/members/")
    lead.get_by_text("+ Add Member").click()
    lead.get_by_label("E-mail address").fill("mate@example.com")
    lead.get_by_label("Role").first.select_option("member")
    lead.screenshot(path=output_dir / "01-invite.png")
    lead.get_by_role("button", name="Invite").click()
    assert lead.get_by_text("Invitation sent to mate@example.com").is_visible()
    assert lead.get_by_role("cell", name="mate@example.com").is_visible()  # pending list

    mail = smtp_server.wait_for(to="mate@example.com", subject_contains="Orbit Labs")
    link = next(u for u in smtp_server.links(mail) if "/invitations/" in u)
    assert link.startswith(live_server.url)

    mate = new_page()
    mate.goto(link)
    mate.get_by_role("link", name="Create account and join").click()
    assert mate.get_by_label("Email").input_value() == "mate@example.com"
    mate.get_by_label("Full name").fill("Mate Person")
    mate.get_by_label("Password:", exact=True).fill("a-long-unique-passphrase")
    mate.get_by_label("Password (again)").fill("a-long-unique-passphrase")
    mate.get_by_role("button", name="Sign Up").click()
    mate.get_by_role("button", name="Join Orbit Labs").click()
    mate.wait_for_url(re.compile(r".*/usage/$"))
    assert "You joined as Member" in mate.content()

    mate.get_by_role("link", name="Members").click()
    mate.get_by_test_id("role-filter").select_option("admin")
    mate.wait_for_url(re.compile(r".*role=admin.*"))
    rows = mate.get_by_test_id("member-row")
    assert rows.count() == 1 and admin.email in rows.first.inner_text()
    mate.screenshot(path=output_dir / "02-member-view.png", full_page=True)
    assert mate.get_by_text("+ Add Member").count() == 0
    assert mate.get_by_role("button", name="Make Admin").count() == 0
    assert mate.get_by_role("link", name="Audit log").count() == 0

    # A forged POST from the Member's own session is refused by the server.
    status = mate.evaluate(
        """async (url) => {
            const token = document.querySelector('input[name=csrfmiddlewaretoken]').value;
            const body = new URLSearchParams({csrfmiddlewaretoken: token, email: 'evil@example.com', role: 'admin'});
            const r = await fetch(url, {method: 'POST', body});
            return r.status;
        }""",
        f"{live_server.url}/g/{group.public_id}/members/invite/",
    )
    assert status == 403
    assert not group.invitations.filter(email="evil@example.com").exists()
    assert group.memberships.get(user__email="mate@example.com").role == "member"
