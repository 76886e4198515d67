from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        # Billing sits above groups: it adds its steps to the group flows (core.hooks) rather
        # than groups importing billing. Imported here because models are loaded only now.
        from billing.services import credit_account_for, customer_sync_queue
        from groups.services import group_created, group_updated

        group_created.register(credit_account_for)
        group_updated.register(customer_sync_queue)

        from billing.views import keys_page_budgets
        from keys.views import page_sections

        page_sections.register(keys_page_budgets)  # each key's budgets on the API Keys page
