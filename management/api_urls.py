"""Management API routes, mounted at /v1/management/ (see portal/urls.py).

The operations are django-ninja's (management/api.py); each URL's view is wrapped by
`http.finish` (JSON 405, rate-limit headers, no caching).
"""

from django.urls import URLPattern, path, re_path

from management import http, views
from management.api import api

app_name = "management_api"

_operations = [p for p in api.urls[0] if isinstance(p, URLPattern) and p.name != "api-root"]
for _pattern in _operations:
    _pattern.callback = http.finish(_pattern.callback)

urlpatterns = [
    path("openapi.json", views.openapi_json, name="openapi"),
    path("reference", views.reference, name="reference"),
    *_operations,
    # Anything else under /v1/management/ is a JSON 404, not the portal's HTML page.
    re_path(r"^(?P<rest>.*)$", http.unknown_endpoint),
]
