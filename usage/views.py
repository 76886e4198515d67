from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from members.permissions import member_required
from portal.views import coming_soon


@member_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    return coming_soon(request, title="Usage Metrics", issue="usage")
