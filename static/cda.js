// directmail clinical document viewer: remembers which sections a user collapses, by
// LOINC section code, in this browser's localStorage, for every document they open.
//
// The document itself is in a frame sandboxed without allow-scripts: no script runs
// there, ours included, and its opaque origin cannot read our localStorage. So the
// sections are collapsed by the server: this page keeps the list and asks for the frame
// with those sections closed (?collapsed=CODE&collapsed=CODE). Without JavaScript the
// form next to the frame does the same for the document at hand.
(function () {
  "use strict";
  var KEY = "directmail.cda.collapsed";
  var form = document.getElementById("cda-sections");
  var frame = document.getElementById("cda-frame");
  if (!form || !frame) return;
  var boxes = Array.prototype.slice.call(
    form.querySelectorAll('input[type="checkbox"][name="collapsed"]'));

  function saved() {
    try {
      var list = JSON.parse(window.localStorage.getItem(KEY) || "[]");
      return Array.isArray(list) ? list.filter(function (c) { return typeof c === "string"; }) : [];
    } catch (e) {
      return [];
    }
  }
  function save(list) {
    try { window.localStorage.setItem(KEY, JSON.stringify(list)); } catch (e) { /* private mode: this document only */ }
  }
  function show() {
    var params = new URLSearchParams();
    boxes.forEach(function (box) { if (box.checked) params.append("collapsed", box.value); });
    var query = params.toString();
    frame.src = form.getAttribute("action") + (query ? "?" + query : "");
  }

  var remembered = saved();
  var any = false;
  boxes.forEach(function (box) {
    if (remembered.indexOf(box.value) >= 0) { box.checked = true; any = true; }
    box.addEventListener("change", function () {
      var list = saved().filter(function (c) { return c !== box.value; });
      if (box.checked) list.push(box.value);
      save(list);
      show();
    });
  });
  var apply = document.getElementById("cda-apply");
  if (apply) apply.hidden = true;
  if (any) show();
})();
