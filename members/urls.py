from django.urls import path

from members import views

app_name = "members"
urlpatterns = [
    path("", views.list, name="list"),
    path("invite/", views.invite, name="invite"),
    path("leave/", views.leave, name="leave"),
    path(
        "invitations/<str:invitation_id>/resend/",
        views.invitation_action,
        {"action": "resend"},
        name="invitation_resend",
    ),
    path(
        "invitations/<str:invitation_id>/revoke/",
        views.invitation_action,
        {"action": "revoke"},
        name="invitation_revoke",
    ),
    path("<str:member_id>/role/", views.change_role, name="change_role"),
    path("<str:member_id>/remove/", views.remove, name="remove"),
]
