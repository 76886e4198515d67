"""Management keys on the API Keys page, under /g/<group_id>/keys/management/ (Admins only)."""

from django.urls import path

from management import views

app_name = "management"
urlpatterns = [
    path("new/", views.create, name="create"),
    path("<str:key_id>/revoke/", views.revoke, name="revoke"),
]
