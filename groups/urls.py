from django.urls import path

from groups import views

app_name = "groups"
# Mounted at /g/<group_id>/ (see portal/urls.py); `create` is mounted at /groups/new/.
urlpatterns = [
    path("", views.group_home, name="home"),
    path("settings/", views.details, name="details"),
    path("settings/security/", views.security, name="security"),
]
