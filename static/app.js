// directmail page behaviour: CSRF header for htmx, the idle-timeout warning
// (WCAG 2.2.1: warn and let the user extend), and error toasts for htmx requests.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]');
  var token = csrf ? csrf.getAttribute("content") : "";

  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRF-Token"] = token;
  });
  document.addEventListener("htmx:responseError", function (e) {
    var toast = document.getElementById("toast");
    if (!toast) return;
    toast.textContent = e.detail.xhr.responseText || "That did not work. Reload the page and try again.";
    toast.hidden = false;
    setTimeout(function () { toast.hidden = true; }, 8000);
  });

  var idle = parseInt(document.body.getAttribute("data-idle-seconds") || "0", 10);
  if (!idle) return;
  var warnBefore = Math.min(120, Math.floor(idle / 2));
  var dialog = document.getElementById("timeout-warning");
  var left = document.getElementById("timeout-left");
  var stay = document.getElementById("timeout-stay");
  var deadline, warnTimer, tick;

  function schedule() {
    clearTimeout(warnTimer);
    clearInterval(tick);
    deadline = Date.now() + idle * 1000;
    dialog.hidden = true;
    warnTimer = setTimeout(warn, (idle - warnBefore) * 1000);
  }
  function warn() {
    dialog.hidden = false;
    stay.focus();
    tick = setInterval(function () {
      var s = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      left.textContent = s >= 60 ? Math.ceil(s / 60) + " minute" + (s > 60 ? "s" : "") : s + " seconds";
      if (s === 0) {
        clearInterval(tick);
        window.location.href = "/login?reason=idle&next=" + encodeURIComponent(location.pathname + location.search);
      }
    }, 1000);
  }
  stay.addEventListener("click", function () {
    fetch("/session/keepalive", { method: "POST", headers: { "X-CSRF-Token": token }, credentials: "same-origin" })
      .then(function (r) {
        // a redirect means the session had already ended
        if (r.ok && !r.redirected) { schedule(); } else { window.location.href = "/login?reason=idle"; }
      });
  });
  // htmx requests are activity too (the server moved its timer)
  document.addEventListener("htmx:afterRequest", function () { if (dialog.hidden) schedule(); });
  schedule();
})();
