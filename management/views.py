"""Pages: management keys on the API Keys page (Admins), the API reference and its OpenAPI file."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.security import reauthentication_required
from keys.services import APIKeyError
from keys.views import render_list
from management.api import openapi_document
from management.forms import ManagementKeyForm
from management.selectors import management_key_get_for_group, management_keys_for_group
from management.services import management_key_create, management_key_revoke
from members.permissions import GroupRequest, admin_required


def keys_page_section(*, request: HttpRequest) -> dict[str, Any]:
    """The management keys on the API Keys page (keys.views.page_sections): listed to Admins
    only, members never see they exist."""
    if not request.membership.is_admin:  # type: ignore[attr-defined]
        return {}
    group = request.group  # type: ignore[attr-defined]
    return {
        "management_keys": management_keys_for_group(group=group),
        "management_form": ManagementKeyForm(prefix="mk"),
    }


@admin_required
@reauthentication_required
@require_POST
def create(request: GroupRequest) -> HttpResponse:
    """Create a management key and show its secret once, on the API Keys page."""
    form = ManagementKeyForm(request.POST, prefix="mk")
    if form.is_valid():
        try:
            issued = management_key_create(
                group=request.group,
                name=form.cleaned_data["name"],
                role=form.cleaned_data["role"],
                actor=request.user,
                request=request,
            )
        except APIKeyError as exc:
            form.add_error(exc.field, str(exc))
        else:
            response = render_list(request, issued_management=issued)
            response["Cache-Control"] = "no-store"
            return response
    return render_list(request, status=422, management_form=form, show_management_form=True)


@admin_required
@require_http_methods(["GET", "POST"])
def revoke(request: GroupRequest, key_id: str) -> HttpResponse:
    key = management_key_get_for_group(group=request.group, public_id=key_id)
    if request.method == "POST":
        management_key_revoke(key=key, actor=request.user, request=request)
        messages.success(request, f"Revoked management key “{key.name}” ({key.masked}).")
        return redirect("keys:list", group_id=request.group.public_id)
    return render(request, "management/confirm_revoke.html", {"key": key})


METHODS = ("get", "post", "patch", "delete")


@require_GET
def openapi_json(request: HttpRequest) -> HttpResponse:
    """The OpenAPI description of the Management API (public: it holds no data)."""
    response = JsonResponse(openapi_document(), json_dumps_params={"indent": 1})
    response["Access-Control-Allow-Origin"] = "*"
    return response


@require_GET
def reference(request: HttpRequest) -> HttpResponse:
    """The Management API reference, rendered here (no CDN) from the generated document."""
    doc = openapi_document()
    tags: dict[str, list[dict[str, Any]]] = {}
    for path, operations in doc["paths"].items():
        for method in METHODS:
            if (op := operations.get(method)) is None:
                continue
            status = next(code for code in op["responses"] if str(code).startswith("2"))
            content = op["responses"][status].get("content", {})
            schema = content.get("application/json", {}).get("schema", {})
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            tags.setdefault(op["tags"][0], []).append(
                {
                    "method": method,
                    "path": path,
                    "operation_id": op["operationId"],
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "parameters": [
                        p["name"] for p in op.get("parameters", []) if p["in"] == "query"
                    ],
                    "body": body.get("schema", {}).get("$ref", "").rpartition("/")[2],
                    "response": schema.get("$ref", "").rpartition("/")[2],
                    "status": status,
                    "writes": method != "get",
                }
            )
    return render(request, "management/reference.html", {"tags": tags})
