from django.urls import path

from usage import views

app_name = "usage"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("export.csv", views.export, name="export"),
    path("events.csv", views.export_raw, name="export_raw"),
    path("keys/<str:key_id>/", views.key_usage, name="key"),
]
