// directmail clinical document viewer: remembers which sections a user collapses and
// the order they put sections in, by LOINC section code, in this browser's
// localStorage, for every document they open.
//
// The document itself is in a frame sandboxed without allow-scripts: no script runs
// there, ours included, and its opaque origin cannot read our localStorage. So the
// sections are collapsed and ordered by the server: this page keeps the lists and asks
// for the frame with those sections first and closed
// (?order=CODE&order=CODE&collapsed=CODE). Without JavaScript the form next to the
// frame does the same for the document at hand: its boxes reload the frame, its move
// buttons reload this page in the new order.
(function () {
  "use strict";
  var COLLAPSED = "directmail.cda.collapsed";
  var ORDER = "directmail.cda.order";
  // as many codes as the server reads from a list
  var MAX_CODES = 200;
  var form = document.getElementById("cda-sections");
  var frame = document.getElementById("cda-frame");
  var list = document.getElementById("cda-section-list");
  var status = document.getElementById("cda-order-status");
  if (!form || !frame || !list) return;
  var boxes = Array.prototype.slice.call(
    form.querySelectorAll('input[type="checkbox"][name="collapsed"]'));
  // the order is sent with the frame once it is the user's own (saved, moved, or
  // already in this page's address)
  var ordered = /[?&]order=/.test(frame.getAttribute("src") || "");

  function saved(key) {
    try {
      var codes = JSON.parse(window.localStorage.getItem(key) || "[]");
      return Array.isArray(codes) ? codes.filter(function (c) { return typeof c === "string"; }) : [];
    } catch (e) {
      return [];
    }
  }
  function save(key, codes) {
    try { window.localStorage.setItem(key, JSON.stringify(codes)); } catch (e) { /* private mode: this document only */ }
  }
  function forget(key) {
    try { window.localStorage.removeItem(key); } catch (e) { /* nothing kept */ }
  }

  // The entries of the list: top-level sections; those with a code can move.
  function entries() { return Array.prototype.slice.call(list.children); }
  function movable() { return entries().filter(function (li) { return li.hasAttribute("data-code"); }); }
  function order() { return movable().map(function (li) { return li.getAttribute("data-code"); }); }
  function title(li) { return li.querySelector("label").textContent.trim(); }

  // Puts the entries in this order of codes: those named first, in that order, then
  // the other movable ones as they were, then those that cannot move, as the server
  // renders the frame when every movable code is named.
  function arrange(codes) {
    var movables = movable();
    var fixed = entries().filter(function (li) { return !li.hasAttribute("data-code"); });
    var first = [];
    codes.forEach(function (code) {
      movables.forEach(function (li) {
        if (li.getAttribute("data-code") === code && first.indexOf(li) < 0) first.push(li);
      });
    });
    var rest = movables.filter(function (li) { return first.indexOf(li) < 0; });
    first.concat(rest, fixed).forEach(function (li) { list.appendChild(li); });
    var now = movable();
    now.forEach(function (li, i) {
      li.querySelector('button[value$=":up"]').hidden = i === 0;
      li.querySelector('button[value$=":down"]').hidden = i === now.length - 1;
    });
  }

  // The order to keep: this document's, with the codes saved from other documents it
  // lacks each kept after the code it followed.
  function merged(previous, current) {
    var out = current.slice();
    previous.forEach(function (code, i) {
      if (out.indexOf(code) >= 0) return;
      var at = 0;
      for (var j = i - 1; j >= 0; j--) {
        var k = out.indexOf(previous[j]);
        if (k >= 0) { at = k + 1; break; }
      }
      out.splice(at, 0, code);
    });
    return out.slice(0, MAX_CODES);
  }

  function show() {
    var params = new URLSearchParams();
    if (ordered) order().forEach(function (code) { params.append("order", code); });
    boxes.forEach(function (box) { if (box.checked) params.append("collapsed", box.value); });
    var query = params.toString();
    frame.src = form.getAttribute("action") + (query ? "?" + query : "");
  }

  function move(button) {
    var li = button.closest("li[data-code]");
    var code = li.getAttribute("data-code");
    var up = /:up$/.test(button.value);
    var codes = order();
    var at = codes.indexOf(code);
    var to = up ? at - 1 : at + 1;
    if (at < 0 || to < 0 || to >= codes.length) return;
    codes[at] = codes[to];
    codes[to] = code;
    arrange(codes);
    save(ORDER, merged(saved(ORDER), codes));
    ordered = true;
    show();
    // moving the entry took the focus away: back to the button, or to its other one
    // at either end of the list
    var other = li.querySelector(up ? 'button[value$=":down"]' : 'button[value$=":up"]');
    (button.hidden ? other : button).focus();
    if (status) {
      status.textContent = title(li) + " moved " + (up ? "up" : "down") + ": " +
        (to + 1) + " of " + codes.length + ".";
    }
  }

  var any = false;
  var remembered = saved(COLLAPSED);
  boxes.forEach(function (box) {
    if (remembered.indexOf(box.value) >= 0) { box.checked = true; any = true; }
    box.addEventListener("change", function () {
      var codes = saved(COLLAPSED).filter(function (c) { return c !== box.value; });
      if (box.checked) codes.push(box.value);
      save(COLLAPSED, codes);
      show();
    });
  });
  Array.prototype.slice.call(form.querySelectorAll('button[name="move"]')).forEach(function (button) {
    button.addEventListener("click", function (event) {
      event.preventDefault();
      move(button);
    });
  });
  // "Reset order": forget it, and let the form ask for the page in the default order
  var reset = document.getElementById("cda-reset-order");
  if (reset) reset.addEventListener("click", function () { forget(ORDER); });

  var apply = document.getElementById("cda-apply");
  if (apply) apply.hidden = true;
  var kept = saved(ORDER);
  if (kept.length) {
    var before = entries();
    arrange(kept);
    ordered = true;
    if (entries().some(function (li, i) { return li !== before[i]; })) any = true;
  }
  // Not before the frame's first load is over: a new address given while that load is
  // still under way may lose to it (Chromium then shows the first one).
  if (any) {
    if (document.readyState === "complete") show();
    else window.addEventListener("load", show);
  }
})();
