// Small progressive enhancements; every page works without this file. The CSP allows no inline
// script or event handler (onclick=…): behaviour is wired here from data- attributes.
(function () {
  "use strict";
  // Copy buttons: <button data-copy="#element-id">Copy</button>
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.value !== undefined ? source.value : source.textContent;
    var done = function () {
      var old = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = old; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text.trim()).then(done);
    } else {
      var area = document.createElement("textarea");
      area.value = text.trim();
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
      done();
    }
  });
  // Ask before a destructive form is sent: <form data-confirm="Remove this card?">.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form instanceof HTMLFormElement && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  }, true);
  // Select a new secret's whole text on focus: <input data-select-on-focus>.
  document.addEventListener("focusin", function (event) {
    if (event.target instanceof HTMLInputElement && event.target.hasAttribute("data-select-on-focus")) {
      event.target.select();
    }
  });
  // Close other <details> menus when one opens.
  document.addEventListener("toggle", function (event) {
    var el = event.target;
    if (!(el instanceof HTMLDetailsElement) || !el.open || !el.classList.contains("menu")) return;
    document.querySelectorAll("details.menu[open]").forEach(function (other) {
      if (other !== el) other.open = false;
    });
  }, true);
})();
