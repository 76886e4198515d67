"""Management API routes, mounted at /v1/management/ (see portal/urls.py)."""

from django.urls import path, re_path

from management import api, http, views

app_name = "management_api"
urlpatterns = [
    path("openapi.json", views.openapi_json, name="openapi"),
    path("reference", views.reference, name="reference"),
    path("group", api.group, name="group"),
    path("billing", api.billing, name="billing"),
    path("billing/transactions", api.transactions, name="transactions"),
    path("usage", api.usage, name="usage"),
    path("usage/grouped", api.usage_by, name="usage_grouped"),
    path("keys", api.keys, name="keys"),
    path("keys/<str:key_id>", api.key, name="key"),
    path("keys/<str:key_id>/revoke", api.key_revoke_view, name="key_revoke"),
    path("keys/<str:key_id>/regenerate", api.key_regenerate_view, name="key_regenerate"),
    path("members", api.members, name="members"),
    path("members/<str:member_id>", api.member, name="member"),
    path("invitations", api.invitations, name="invitations"),
    path("invitations/<str:invitation_id>", api.invitation, name="invitation"),
    path(
        "invitations/<str:invitation_id>/revoke",
        api.invitation_revoke_view,
        name="invitation_revoke",
    ),
    path("invoices", api.invoices, name="invoices"),
    path("invoices/<str:invoice_id>", api.invoice, name="invoice"),
    path("invoices/<str:invoice_id>/pdf", api.invoice_pdf, name="invoice_pdf"),
    # Anything else under /v1/management/ is a JSON 404, not the portal's HTML page.
    re_path(r"^(?P<rest>.*)$", http.unknown_endpoint),
]
