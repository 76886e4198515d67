from django.urls import path

from billing import views

app_name = "billing"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("cards/new/", views.card_new, name="card_new"),
    path("cards/saved/", views.card_saved, name="card_saved"),
    path("cards/<str:card_id>/default/", views.card_default, name="card_default"),
    path("cards/<str:card_id>/remove/", views.card_remove, name="card_remove"),
    path("credits/", views.buy, name="buy"),
    path("payments/<str:payment_id>/", views.payment, name="payment"),
    path("payments/<str:payment_id>/complete/", views.complete, name="complete"),
    path("auto-top-up/", views.auto_top_up, name="auto_top_up"),
    path("budgets/", views.budget_add, name="budget_add"),
    path("budgets/<int:budget_id>/", views.budget_edit, name="budget_edit"),
    path("budgets/<int:budget_id>/delete/", views.budget_remove, name="budget_delete"),
]
urlpatterns += [
    path("invoices/", views.invoices, name="invoices"),
    path("invoices/<str:invoice_id>/", views.invoice, name="invoice"),
    path("invoices/<str:invoice_id>/pdf/", views.invoice_pdf, name="invoice_pdf"),
    path("receipts/<str:payment_id>/", views.receipt, name="receipt"),
    path("receipts/<str:payment_id>/pdf/", views.receipt_pdf, name="receipt_pdf"),
]
