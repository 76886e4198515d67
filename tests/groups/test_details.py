from __future__ import annotations

from io import StringIO

import pytest
from allauth.account.models import EmailAddress
from django.core.management import CommandError, call_command

from groups.models import APIGroup

pytestmark = pytest.mark.django_db

DETAILS = {
    "name": "Acme AI Ltd",
    "description": "Research",
    "address_line1": "1 High St",
    "address_line2": "",
    "city": "London",
    "state": "",
    "postal_code": "EC1A 1BB",
    "country": "GB",
    "tax_id": "gb 980 7806 84",
}


def test_admin_edits_details_and_it_is_audited(admin_client, group):
    response = admin_client.post(f"/g/{group.public_id}/settings/", DETAILS)
    assert response.status_code == 302
    group.refresh_from_db()
    assert (group.name, group.city, str(group.country), group.tax_id) == (
        "Acme AI Ltd",
        "London",
        "GB",
        "GB 980 7806 84",
    )
    event = group.audit_events.get(action="group.update")
    assert event.data["name"][1] == "Acme AI Ltd" and event.ip == "127.0.0.1"


@pytest.mark.parametrize(
    ("tax_id", "message"),
    [
        ("x", "3 to 32 characters"),
        ("DE<script>", "Use only letters"),
        ("A" * 40, "at most 32 characters"),
    ],
)
def test_bad_tax_ids_are_explained(admin_client, group, tax_id, message):
    response = admin_client.post(f"/g/{group.public_id}/settings/", DETAILS | {"tax_id": tax_id})
    assert response.status_code == 422
    assert message in response.content.decode()
    group.refresh_from_db()
    assert group.tax_id == ""


def test_tax_id_help_names_the_countrys_format(admin_client, group):
    response = admin_client.post(
        f"/g/{group.public_id}/settings/", DETAILS | {"country": "DE", "tax_id": "?"}
    )
    assert "For Germany: USt-IdNr., e.g. DE123456789." in response.content.decode()


@pytest.mark.parametrize(
    ("country", "tax_id", "saved"),
    [
        ("DE", "de 136 695 976", "DE 136 695 976"),  # German VAT (stdnum.eu.vat / de.vat)
        ("US", "91-1144442", "91-1144442"),  # US EIN
        ("US", "DE136695976", "DE136695976"),  # an EU VAT number, whatever the country
        ("AQ", "ANTARCTIC-42", "ANTARCTIC-42"),  # stdnum knows no number: characters and length
    ],
)
def test_valid_tax_ids_are_saved(admin_client, group, country, tax_id, saved):
    details = DETAILS | {"country": country, "tax_id": tax_id}
    response = admin_client.post(f"/g/{group.public_id}/settings/", details)
    assert response.status_code == 302, response.content.decode()
    group.refresh_from_db()
    assert (str(group.country), group.tax_id) == (country, saved)


@pytest.mark.parametrize(
    ("country", "tax_id", "hints"),
    [
        (
            "DE",
            "DE136695978",  # wrong check digit
            ["German VAT number", "checksum", "For Germany: USt-IdNr., e.g. DE123456789"],
        ),
        ("DE", "DE 1234", ["German VAT number", "invalid length"]),
        ("US", "00-3456789", ["EIN (U.S. Employer Identification Number)", "12-3456789"]),
        ("US", "12345", ["not a valid EIN (U.S. Employer Identification Number)"]),
        ("AQ", "A<B>", ["Use only letters"]),  # unknown to stdnum: today's check still applies
    ],
)
def test_invalid_tax_ids_are_refused_with_the_format_hint(
    admin_client, group, country, tax_id, hints
):
    before = (group.name, str(group.country), group.tax_id)
    details = DETAILS | {"country": country, "tax_id": tax_id}
    response = admin_client.post(f"/g/{group.public_id}/settings/", details)
    assert response.status_code == 422
    html = response.content.decode()
    for hint in hints:
        assert hint in html, hint
    group.refresh_from_db()
    assert (group.name, str(group.country), group.tax_id) == before  # nothing saved


def test_members_see_details_read_only(member_client, group):
    html = member_client.get(f"/g/{group.public_id}/settings/").content.decode()
    assert (
        "Only Admins can change these details" in html
        and '<form method="post" class="card form' not in html
    )
    assert member_client.post(f"/g/{group.public_id}/settings/", DETAILS).status_code == 403
    group.refresh_from_db()
    assert group.name != "Acme AI Ltd"


def test_create_group_command_is_idempotent():
    out, err = StringIO(), StringIO()
    call_command(
        "create_group",
        name="Ops Co",
        admin_email="Ops@Example.com",
        admin_password="pw-123456789",
        stdout=out,
        stderr=err,
    )
    call_command(
        "create_group", name="Ops Co", admin_email="ops@example.com", stdout=out, stderr=err
    )
    ids = out.getvalue().split()
    assert len(ids) == 2 and ids[0] == ids[1]
    group = APIGroup.objects.get(public_id=ids[0])
    membership = group.memberships.get()
    assert membership.role == "admin" and membership.user.email == "ops@example.com"
    assert membership.user.check_password("pw-123456789")
    assert EmailAddress.objects.get(user=membership.user).verified
    with pytest.raises(CommandError, match="not an e-mail"):
        call_command("create_group", name="X", admin_email="nope", stdout=out, stderr=err)
