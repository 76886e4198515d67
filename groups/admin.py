from __future__ import annotations

from django.contrib import admin

from groups.models import APIGroup


@admin.register(APIGroup)
class APIGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "public_id", "country", "created_at"]
    search_fields = ["name", "public_id"]
    readonly_fields = ["public_id", "created_at", "updated_at"]
