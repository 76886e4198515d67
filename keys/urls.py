from django.urls import path

from keys import views

app_name = "keys"
urlpatterns = [
    path("", views.list, name="list"),
    path("new/", views.create, name="create"),
    path("<str:key_id>/edit/", views.edit, name="edit"),
    path("<str:key_id>/revoke/", views.revoke, name="revoke"),
    path("<str:key_id>/regenerate/", views.regenerate, name="regenerate"),
    path("<str:key_id>/restrictions/", views.restrictions, name="restrictions"),
]
