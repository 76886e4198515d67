// Confirm a payment the bank wants confirmed (billing/complete.html), then let the server
// re-read its state. A file, not an inline script: the CSP allows no inline JS.
(function () {
  "use strict";
  var form = document.getElementById("pay-form");
  var stripe = Stripe(form.dataset.key);
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    document.getElementById("pay-submit").disabled = true;
    stripe.confirmCardPayment(form.dataset.clientSecret).then(function (result) {
      if (result.error) { document.getElementById("pay-errors").textContent = result.error.message; }
      form.submit();  // the server re-reads the payment's state either way
    });
  });
})();
