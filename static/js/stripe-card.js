// The card form (billing/card_new.html): Stripe.js confirms the SetupIntent in the browser,
// then the form posts the SetupIntent id. A file, not an inline script: the CSP allows no inline JS.
(function () {
  "use strict";
  var form = document.getElementById("card-form");
  var stripe = Stripe(form.dataset.key);
  var card = stripe.elements().create("card");
  card.mount("#card-element");
  var errors = document.getElementById("card-errors");
  var button = document.getElementById("card-submit");
  var spinner = document.getElementById("card-spinner");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    errors.textContent = "";
    button.disabled = true;
    spinner.style.opacity = 1;
    stripe.confirmCardSetup(form.dataset.clientSecret, {payment_method: {card: card}}).then(function (result) {
      if (result.error) {
        errors.textContent = result.error.message || "The card could not be saved.";
        button.disabled = false;
        spinner.style.opacity = 0;
        return;
      }
      document.getElementById("setup-intent").value = result.setupIntent.id;
      form.submit();
    });
  });
})();
