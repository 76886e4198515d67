"""The group's audit log page, under /g/<group_id>/audit/ with the URL names `audit:…`.

It lives in groups, not audit: audit sits below groups and members (every service records events
through it), and the page needs members' permission check (docs/architecture.md).
"""

from django.urls import path

from groups import audit_log

app_name = "audit"
urlpatterns = [path("", audit_log.log, name="log")]
