from django.apps import AppConfig


class ManagementConfig(AppConfig):
    name = "management"
    verbose_name = "Management API"

    def ready(self) -> None:
        # Management sits above members and keys: it adds its steps to their flows (core.hooks)
        # rather than them importing management. Imported here because models are loaded only now.
        from keys.views import page_sections
        from management.services import management_keys_offboard
        from management.views import keys_page_section
        from members.services import admin_offboarded

        admin_offboarded.register(management_keys_offboard)
        page_sections.register(keys_page_section)
