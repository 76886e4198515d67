from django.urls import path

from alerts import views

app_name = "alerts"
urlpatterns = [
    path("", views.page, name="page"),
    path("new/", views.create, name="create"),
    path("<str:alert_id>/edit/", views.edit, name="edit"),
    path("<str:alert_id>/delete/", views.delete, name="delete"),
    path("webhooks/new/", views.webhook_create, name="webhook_create"),
    path("webhooks/<str:endpoint_id>/edit/", views.webhook_edit, name="webhook_edit"),
    path("webhooks/<str:endpoint_id>/delete/", views.webhook_delete, name="webhook_delete"),
    path("webhooks/<str:endpoint_id>/test/", views.webhook_test, name="webhook_test"),
]
