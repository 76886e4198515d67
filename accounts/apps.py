from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in  # app registry

        from accounts.security import stamp_login  # app registry

        # Not a workflow: a timestamp in the session, read by accounts.security.
        user_logged_in.connect(stamp_login, dispatch_uid="accounts.security.stamp_login")
