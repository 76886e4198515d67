from __future__ import annotations

from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path

from billing import webhooks as billing_webhooks
from groups import views as group_views
from members import views as member_views
from portal import views

handler403 = "portal.views.permission_denied"

# The admin's own login form would skip allauth: no two-factor step, no login rate limits. Send
# it to allauth's sign-in (with next=) instead; signed-in users who are not staff get a 403.
admin.site.login = secure_admin_login(admin.site.login)  # type: ignore[method-assign]

# Every page of an API group lives under /g/<public id>/ and is guarded by
# members.permissions.group_required.
group_patterns = [
    path("", include("groups.urls")),
    path("members/", include("members.urls")),
    path("keys/management/", include("management.urls")),
    path("keys/", include("keys.urls")),
    path("billing/", include("billing.urls")),
    path("usage/", include("usage.urls")),
    path("alerts/", include("alerts.urls")),
    path("audit/", include("groups.audit_urls")),
]

urlpatterns = [
    path("", group_views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    # The Management API (JSON, management keys). The gateway's ASGI app intercepts only its exact
    # inference paths, so these reach Django.
    path("v1/management/", include("management.api_urls")),
    path("stripe/webhook/", billing_webhooks.stripe_webhook, name="stripe_webhook"),
    path("groups/new/", group_views.create, name="group_create"),
    path("invitations/<str:token>/", member_views.accept, name="invitation_accept"),
    path(
        "invitations/<str:token>/switch/",
        member_views.switch_user_for_invitation,
        name="invitation_switch_user",
    ),
    path("g/<str:group_id>/", include(group_patterns)),
    path("accounts/settings/", include("accounts.urls")),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
]
