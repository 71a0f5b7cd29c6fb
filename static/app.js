// directmail page behaviour: CSRF header for htmx, the idle-timeout warning
// (WCAG 2.2.1: warn and let the user extend), and error toasts for htmx requests.
document.documentElement.classList.add("js");
(function () {
  "use strict";
  // the phone layout's folder menu
  Array.prototype.forEach.call(document.querySelectorAll(".menu-toggle"), function (b) {
    var menu = document.getElementById(b.getAttribute("aria-controls"));
    if (!menu) return;
    b.addEventListener("click", function () {
      var open = menu.classList.toggle("open");
      b.setAttribute("aria-expanded", open ? "true" : "false");
    });
  });
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

  // Times the server writes in UTC (<time datetime data-local>, and "2026-11-26 14:05
  // UTC" in the text of an element marked data-utc-times) are shown in the zone the
  // user chose on the account page, else the browser's; the UTC time stays on hover.
  var zone = document.body.getAttribute("data-time-zone") || undefined;
  function inZone(when, opts) {
    opts.timeZone = zone;
    try { return when.toLocaleString(undefined, opts); } catch (e) {
      delete opts.timeZone; return when.toLocaleString(undefined, opts);
    }
  }
  function dayOf(when) { return inZone(when, { year: "numeric", month: "numeric", day: "numeric" }); }
  function shown(when) {
    var today = dayOf(new Date()) === dayOf(when);
    return inZone(when, today ? { hour: "2-digit", minute: "2-digit" }
      : { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }
  var UTC_TEXT = /(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}) UTC/g;
  function utcTexts(el) {
    var walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    var nodes = [];
    while (walker.nextNode()) {
      var n = walker.currentNode;
      if (!n.parentNode.closest("time") && UTC_TEXT.test(n.nodeValue)) nodes.push(n);
      UTC_TEXT.lastIndex = 0;
    }
    nodes.forEach(function (n) {
      var text = n.nodeValue, at = 0, part = document.createDocumentFragment(), m;
      while ((m = UTC_TEXT.exec(text)) !== null) {
        part.appendChild(document.createTextNode(text.slice(at, m.index)));
        var t = document.createElement("time");
        t.setAttribute("datetime", m[1] + "-" + m[2] + "-" + m[3] + "T" + m[4] + ":" + m[5] + ":00Z");
        t.setAttribute("title", m[0]);
        t.setAttribute("data-local", "");
        t.textContent = m[0];
        part.appendChild(t);
        at = m.index + m[0].length;
      }
      part.appendChild(document.createTextNode(text.slice(at)));
      n.parentNode.replaceChild(part, n);
    });
  }
  function localTimes(root) {
    var scope = root || document;
    Array.prototype.forEach.call(scope.querySelectorAll("[data-utc-times]"), utcTexts);
    Array.prototype.forEach.call(scope.querySelectorAll("time[data-local]"), function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) return;
      el.textContent = shown(when);
    });
  }
  var browserZone = document.querySelector("option[data-browser-zone]");
  if (browserZone) {
    try { browserZone.textContent += " (" + Intl.DateTimeFormat().resolvedOptions().timeZone + ")"; } catch (e) { /* keep the words */ }
  }
  // on a phone a table's rows stack as cards: each cell carries its column's name
  function labelCells(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll("table.list"), function (t) {
      // a table that scrolls in its own box can be scrolled from the keyboard
      if (t.scrollWidth > t.clientWidth + 1 && !t.hasAttribute("tabindex")) t.setAttribute("tabindex", "0");
      var heads = Array.prototype.map.call(t.querySelectorAll("thead th"), function (th) { return th.textContent.trim(); });
      Array.prototype.forEach.call(t.querySelectorAll("tbody tr"), function (tr) {
        Array.prototype.forEach.call(tr.children, function (cell, i) {
          if (heads[i] && !cell.hasAttribute("data-label")) cell.setAttribute("data-label", heads[i]);
        });
      });
    });
  }
  window.directmailLocalTimes = localTimes;
  localTimes(document);
  labelCells(document);
  document.addEventListener("htmx:afterSwap", function () { localTimes(document); labelCells(document); });

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
  // the time left as it is: "1 minute 30 seconds", never rounded up to "2 minutes"
  function words(s) {
    var m = Math.floor(s / 60), r = s % 60;
    var parts = [];
    if (m) parts.push(m + (m === 1 ? " minute" : " minutes"));
    if (r || !m) parts.push(r + (r === 1 ? " second" : " seconds"));
    return parts.join(" ");
  }
  function warn() {
    dialog.hidden = false;
    stay.focus();
    var show = function () {
      var s = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      left.textContent = words(s);
      return s;
    };
    show();
    tick = setInterval(function () {
      var s = show();
      if (s === 0) {
        clearInterval(tick);
        var go = function () {
          window.location.href = "/login?reason=idle&next=" + encodeURIComponent(location.pathname + location.search);
        };
        // a draft being written is saved before the sign-out page
        var before = window.directmailBeforeSignOut;
        if (before) before().then(go, go); else go();
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
  // requests from page scripts (draft autosave) are activity too
  window.directmailActivity = function () { if (dialog.hidden) schedule(); };
  // htmx requests are activity too (the server moved its timer), except background
  // ones (the folder's new-mail poll, X-Background), which the server does not count
  document.addEventListener("htmx:afterRequest", function (e) {
    var config = e.detail && e.detail.requestConfig;
    if (config && config.headers && config.headers["X-Background"]) return;
    if (dialog.hidden) schedule();
  });
  schedule();
})();

// Webmail: keyboard shortcuts, list navigation, compose (autosave, recipient chips,
// suggestions, uploads with progress and drag-and-drop), print.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]');
  var token = csrf ? csrf.getAttribute("content") : "";

  var printNow = document.getElementById("print-now");
  if (printNow) printNow.addEventListener("click", function () { window.print(); });
  // Copy buttons beside single-use links: the clipboard, else the link selected
  Array.prototype.forEach.call(document.querySelectorAll("[data-copy]"), function (b) {
    b.addEventListener("click", function () {
      var box = document.getElementById(b.getAttribute("data-copy"));
      var said = document.querySelector('[data-copied="' + b.getAttribute("data-copy") + '"]');
      if (!box) return;
      var tell = function (text) { if (said) said.textContent = text; };
      box.focus();
      box.select();
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(box.value).then(function () { tell("Copied."); },
          function () { tell("Selected: press Ctrl+C (or ⌘C) to copy."); });
      } else {
        tell("Selected: press Ctrl+C (or ⌘C) to copy.");
      }
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("[data-print]"), function (b) {
    b.addEventListener("click", function () { window.print(); });
  });

  // --- list navigation and shortcuts ---------------------------------------
  var help = document.getElementById("shortcuts");
  var closeHelp = document.getElementById("shortcuts-close");
  if (closeHelp) closeHelp.addEventListener("click", function () { help.hidden = true; });
  var current = -1;
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("#message-list tbody tr[data-href]")); }
  function focusRow(i) {
    var list = rows();
    if (!list.length) return;
    current = Math.max(0, Math.min(list.length - 1, i));
    list.forEach(function (r, n) { r.classList.toggle("current", n === current); });
    var link = list[current].querySelector("a");
    if (link) link.focus();
  }
  function currentRow() { var list = rows(); return current >= 0 ? list[current] : null; }
  function clickAction(value) {
    var b = document.querySelector('#message-actions button[value="' + value + '"]');
    if (b) { b.click(); return true; }
    return false;
  }
  function listAction(value) {
    var row = currentRow();
    var form = document.getElementById("list-form");
    if (!row || !form) return;
    var box = row.querySelector('input[name="id"]');
    if (box) box.checked = true;
    var b = form.querySelector('button[value="' + value + '"]');
    if (b) b.click();
  }
  function messageAction(value) {
    // from the list: open the current message's action through its page's form
    var row = currentRow();
    if (!row || !row.getAttribute("data-id")) return;
    var f = document.createElement("form");
    f.method = "post";
    f.action = "/mail/messages/" + row.getAttribute("data-id") + "/act";
    [["_csrf", token], ["action", value]].forEach(function (kv) {
      var i = document.createElement("input");
      i.type = "hidden"; i.name = kv[0]; i.value = kv[1]; f.appendChild(i);
    });
    document.body.appendChild(f);
    f.submit();
  }
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) {
      if (e.key === "Escape") t.blur();
      return;
    }
    if (!document.querySelector(".mail-layout")) return;
    var key = e.key;
    if (help && !help.hidden && key === "Escape") { help.hidden = true; return; }
    switch (key) {
      case "?": if (help) { help.hidden = false; closeHelp.focus(); } break;
      case "j": focusRow(current + 1); break;
      case "k": focusRow(current - 1); break;
      case "o": case "Enter": {
        var row = currentRow();
        if (row) window.location.href = row.getAttribute("data-href");
        else return;
        break;
      }
      case "c": { var c = document.getElementById("compose"); if (c) c.click(); break; }
      case "/": { var s = document.getElementById("search-q"); if (s) s.focus(); else return; break; }
      case "r": if (!clickAction("reply")) messageAction("reply"); break;
      case "a": if (!clickAction("reply-all")) messageAction("reply-all"); break;
      case "f": if (!clickAction("forward")) messageAction("forward"); break;
      case "e": if (!clickAction("archive")) listAction("archive"); break;
      case "#": if (!clickAction("trash")) listAction("trash"); break;
      default: return;
    }
    e.preventDefault();
  });
  document.addEventListener("click", function (e) {
    // a click anywhere on a row opens it (the subject link stays the real target)
    var row = e.target.closest && e.target.closest("#message-list tbody tr[data-href]");
    if (!row || e.target.closest("a, input, button, label")) return;
    window.location.href = row.getAttribute("data-href");
  });
  document.addEventListener("htmx:afterSwap", function () {
    var empty = document.getElementById("empty");
    var table = document.getElementById("message-list");
    if (empty && table && rows().length) { empty.hidden = true; table.hidden = false; }
  });

  // --- compose --------------------------------------------------------------
  var form = document.getElementById("compose-main");
  if (!form) return;
  // "0": a new message, not stored until something is written or attached; its forms
  // post to the mailbox's compose address (newBase) until the first save makes the draft
  var draft = form.getAttribute("data-draft");
  var newBase = draft === "0" ? form.getAttribute("action") : null;
  var saved = document.getElementById("saved");
  var dirty = false, timer = null, saving = null;

  function target() { return draft === "0" ? newBase : "/mail/drafts/" + draft; }
  // the first save made the draft: the page now edits it, at its own address
  function created(id) {
    if (draft !== "0" || !/^[0-9]+$/.test(id || "")) return;
    draft = id;
    form.setAttribute("data-draft", id);
    var base = "/mail/drafts/" + id;
    ["action", "formaction"].forEach(function (attr) {
      Array.prototype.forEach.call(document.querySelectorAll("[" + attr + "]"), function (el) {
        var v = el.getAttribute(attr);
        if (v.indexOf(newBase) === 0) el.setAttribute(attr, base + v.slice(newBase.length));
      });
    });
    Array.prototype.forEach.call(document.querySelectorAll("form.discard[hidden]"), function (f) { f.hidden = false; });
    if (window.history && history.replaceState) history.replaceState(null, "", base);
  }

  function fields() {
    var data = new URLSearchParams();
    ["to", "cc", "subject", "body", "patient_given", "patient_family", "patient_birth_date",
      "patient_sex", "patient_id", "patient_purpose"].forEach(function (n) {
      if (form.elements[n]) data.append(n, form.elements[n].value);
    });
    if (form.elements.xdm_box) {
      data.append("xdm_box", "1");
      if (form.elements.as_xdm.checked) data.append("as_xdm", "yes");
    }
    data.append("_csrf", token);
    return data;
  }
  function save() {
    clearTimeout(timer);
    // one save at a time, so a new message's draft is made once
    if (saving) return saving.then(save);
    if (!dirty) return Promise.resolve();
    dirty = false;
    saved.textContent = "Saving…";
    saving = fetch(target(), {
      method: "POST", credentials: "same-origin", body: fields(),
      headers: { "X-CSRF-Token": token, "X-Autosave": "1" }
    }).then(function (r) {
      if (r.ok && !r.redirected) {
        created(r.headers.get("X-Draft"));
        if (window.directmailActivity) window.directmailActivity();
        return r.text().then(function (t) {
          saved.textContent = t;
          if (window.directmailLocalTimes) window.directmailLocalTimes(saved.parentNode);
        });
      }
      if (r.status === 400 || r.status === 413) {
        // the server said why (too long): keep the text here and say so; the next
        // change tries again
        return r.text().then(function (t) { saved.textContent = "Not saved: " + t; });
      }
      dirty = true;
      saved.textContent = r.redirected
        ? "Not saved: your session has ended. Sign in again in another tab; this page will save then."
        : "Not saved yet; retrying.";
    }).catch(function () { dirty = true; saved.textContent = "Not saved: the server could not be reached. Retrying."; })
      .then(function () { saving = null; });
    return saving;
  }
  function changed() {
    dirty = true;
    clearTimeout(timer);
    // the first keystroke of a new message makes its draft at once
    timer = setTimeout(save, draft === "0" ? 0 : 2000);
  }
  form.addEventListener("input", changed);
  setInterval(function () { if (dirty) save(); }, 10000);
  // leaving the page: send what is unsaved in the background
  function flush() {
    if (!dirty) return;
    dirty = false;
    navigator.sendBeacon(target() + "?beacon=1", new Blob([fields().toString()], { type: "application/x-www-form-urlencoded" }));
  }
  window.addEventListener("pagehide", flush);
  document.addEventListener("visibilitychange", function () { if (document.visibilityState === "hidden") flush(); });
  // the idle sign-out (above) saves first: window.directmailBeforeSignOut
  window.directmailBeforeSignOut = function () { dirty = true; return save(); };
  form.addEventListener("submit", function (e) {
    // Send or Save while a new message's draft is being made: wait for it, then submit
    // to the draft (the buttons' addresses name it by then), so no second draft is made
    if (draft === "0" && saving) {
      e.preventDefault();
      var button = e.submitter;
      saving.then(function () { form.requestSubmit(button); });
      return;
    }
    dirty = false; clearTimeout(timer);
  });

  // recipient chips: each address is checked on the server as it is entered
  var checked = {};
  function renderChips(input) {
    var list = document.getElementById(input.id + "-chips");
    if (!list) return;
    var addresses = input.value.split(/[,;\n]/).map(function (a) {
      var m = a.match(/<([^>]+)>/); return (m ? m[1] : a).trim();
    }).filter(function (a) { return a.length; });
    list.innerHTML = "";
    addresses.forEach(function (a) {
      var li = document.createElement("li");
      li.className = "chip";
      li.textContent = a + " — checking…";
      list.appendChild(li);
      var done = function (res) {
        li.className = "chip " + (res.ok ? "ok" : "bad");
        li.textContent = a + " — " + (res.ok ? "✓ " : "✗ ") + res.note;
      };
      if (checked[a]) { done(checked[a]); return; }
      fetch("/mail/check-address?address=" + encodeURIComponent(a), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (res) { if (res) { checked[a] = res; done(res); } });
    });
  }
  // suggestions: a listbox under the field (directory entries, then recent
  // recipients); arrows move, Enter or a click chooses, Escape closes
  var suggestTimer = null;
  function choose(input, list, address) {
    var head = input.value.split(/[,;]/).slice(0, -1).map(function (s) { return s.trim(); }).filter(Boolean);
    input.value = head.concat([address]).join(", ") + ", ";
    close(input, list);
    changed();
    renderChips(input);
    input.focus();
  }
  function close(input, list) {
    list.hidden = true;
    list.innerHTML = "";
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  }
  function suggest(input, list) {
    var last = input.value.split(/[,;]/).pop().trim();
    if (last.length < 2) { close(input, list); return; }
    clearTimeout(suggestTimer);
    suggestTimer = setTimeout(function () {
      fetch("/mail/suggest?q=" + encodeURIComponent(last), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : []; })
        .then(function (items) {
          list.innerHTML = "";
          items.forEach(function (s, n) {
            var li = document.createElement("li");
            li.id = list.id + "-" + n;
            li.setAttribute("role", "option");
            li.setAttribute("data-address", s.address);
            var name = document.createElement("strong");
            name.textContent = s.name || s.address;
            li.appendChild(name);
            var more = document.createElement("span");
            more.className = "muted";
            more.textContent = " " + (s.name ? s.address : "") + (s.detail ? " · " + s.detail : "");
            li.appendChild(more);
            li.addEventListener("mousedown", function (e) { e.preventDefault(); });
            li.addEventListener("click", function () { choose(input, list, s.address); });
            list.appendChild(li);
          });
          list.hidden = items.length === 0;
          input.setAttribute("aria-expanded", items.length ? "true" : "false");
        });
    }, 200);
  }
  Array.prototype.forEach.call(form.querySelectorAll("[data-recipients]"), function (input) {
    var list = document.getElementById(input.id + "-suggest");
    input.addEventListener("input", function () { suggest(input, list); });
    input.addEventListener("keydown", function (e) {
      if (list.hidden) return;
      var options = Array.prototype.slice.call(list.querySelectorAll("[role=option]"));
      var at = options.findIndex(function (o) { return o.getAttribute("aria-selected") === "true"; });
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        at = e.key === "ArrowDown" ? Math.min(options.length - 1, at + 1) : Math.max(0, at - 1);
        options.forEach(function (o, n) { o.setAttribute("aria-selected", n === at ? "true" : "false"); });
        input.setAttribute("aria-activedescendant", options[at].id);
      } else if (e.key === "Enter" && at >= 0) {
        e.preventDefault();
        choose(input, list, options[at].getAttribute("data-address"));
      } else if (e.key === "Escape") {
        close(input, list);
      }
    });
    input.addEventListener("change", function () { renderChips(input); });
    input.addEventListener("blur", function () { close(input, list); renderChips(input); });
    if (input.value.trim() && !document.querySelector("#" + input.id + "-chips li")) renderChips(input);
  });

  // uploads: several files, progress, drag-and-drop; refused files say why
  var upload = document.getElementById("upload-form");
  var picker = document.getElementById("file");
  var progress = document.getElementById("upload-progress");
  function send(files) {
    if (!files.length) return;
    // a new message's draft is made (with what is typed) before its first file goes
    if (draft === "0") { dirty = true; save().then(function () { if (draft !== "0") send(files); }); return; }
    var data = new FormData();
    Array.prototype.forEach.call(files, function (f) { data.append("file", f, f.name); });
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/mail/drafts/" + draft + "/attachments");
    xhr.setRequestHeader("X-CSRF-Token", token);
    xhr.setRequestHeader("X-Upload", "1");
    progress.hidden = false; progress.value = 0;
    xhr.upload.onprogress = function (e) { if (e.lengthComputable) progress.value = Math.round(100 * e.loaded / e.total); };
    xhr.onload = function () {
      progress.hidden = true;
      var list = document.getElementById("attachment-list");
      if ((xhr.status === 200 || xhr.status === 422) && list) {
        list.outerHTML = xhr.responseText;
        if (window.htmx) window.htmx.process(document.getElementById("attachment-list"));
      } else {
        var toast = document.getElementById("toast");
        toast.textContent = xhr.status === 413
          ? "The files are larger than a message may be; nothing was attached."
          : (xhr.responseText || "The upload did not work; nothing was attached.");
        toast.hidden = false;
      }
      picker.value = "";
    };
    xhr.onerror = function () { progress.hidden = true; };
    xhr.send(data);
  }
  upload.addEventListener("submit", function (e) { e.preventDefault(); send(picker.files); });
  // picking files attaches them: the Attach button is for pages without scripts
  var attachButton = document.getElementById("upload");
  if (attachButton) attachButton.hidden = true;
  picker.addEventListener("change", function () { send(picker.files); });
  ["dragenter", "dragover"].forEach(function (t) {
    upload.addEventListener(t, function (e) { e.preventDefault(); upload.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (t) {
    upload.addEventListener(t, function () { upload.classList.remove("over"); });
  });
  upload.addEventListener("drop", function (e) { e.preventDefault(); send(e.dataTransfer.files); });
})();
