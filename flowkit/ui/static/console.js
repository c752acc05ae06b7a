// flowkit console: refresh the live part of a page (runs list, an unfinished run) in place.
// The part to refresh is the element with data-live inside #live; its data-live is the URL of
// the same part, rendered alone. A page whose part has no data-live (a finished run) is still.
(function () {
  "use strict";
  var EVERY_MS = 2000;
  var container = document.getElementById("live");
  if (!container) { return; }
  var timer = null;

  function part() { return container.querySelector("[data-live]"); }

  function later() {
    if (part()) { timer = window.setTimeout(refresh, EVERY_MS); }
  }

  function refresh() {
    var current = part();
    if (!current) { return; }
    if (document.hidden) { later(); return; }
    fetch(current.getAttribute("data-live"), {
      credentials: "same-origin",
      headers: { "Accept": "text/html", "X-Requested-With": "flowkit-console" }
    }).then(function (answer) {
      if (!answer.ok) { throw new Error("status " + answer.status); }
      return answer.text();
    }).then(function (html) {
      if (container.getAttribute("data-html") !== html) {
        container.innerHTML = html;
        container.setAttribute("data-html", html);
        container.dispatchEvent(new CustomEvent("flowkit:refreshed", { bubbles: true }));
      }
      later();
    }).catch(function () { later(); });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && timer === null) { later(); }
  });
  later();
}());
