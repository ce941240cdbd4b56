// fastapi-gcp-tasks console: live updates. Polls <root>/_live?token=T; when the token changed, fetches the
// current page again and swaps its <main id="live"> region. Without this script every page still works.
(function () {
  "use strict";
  var main = document.getElementById("live");
  if (!main || !window.fetch || !window.DOMParser) {
    return;
  }
  var liveUrl = main.getAttribute("data-live");
  var interval = parseInt(main.getAttribute("data-poll"), 10) || 1500;
  var busy = false;

  function editing() {
    var active = document.activeElement;
    return !!active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
    if (fresh) {
      main.innerHTML = fresh.innerHTML;
      main.setAttribute("data-token", fresh.getAttribute("data-token") || "");
      document.dispatchEvent(new CustomEvent("console:updated"));
    }
  }

  function refresh() {
    return fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html) { swap(html); } });
  }

  function poll() {
    if (busy || document.hidden || editing()) {
      return later();
    }
    busy = true;
    var token = main.getAttribute("data-token") || "";
    fetch(liveUrl + "?token=" + encodeURIComponent(token), { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) { if (data && data.changed) { return refresh(); } })
      .catch(function () { /* the server is restarting or unreachable: try again later */ })
      .then(function () { busy = false; later(); });
  }

  function later() {
    window.setTimeout(poll, interval);
  }

  later();
})();
