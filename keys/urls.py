from django.urls import path

from keys import views

app_name = "keys"
urlpatterns = [
    path("", views.list, name="list"),
]
