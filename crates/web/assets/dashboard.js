// The dashboard's own script, loaded after htmx and its SSE extension. It keeps the "last
// seen ... ago" times ticking, shows whether the live stream is connected (and why not, when
// the server refuses it), asks for everything again after a reconnect, adds live audit rows
// once each, asks before a destructive action, says next to a control when its action was
// not sent or was refused, keeps opened error histories (and reasons being typed) across
// live updates, auto-submits the filters, and draws the charts.
(function () {
  "use strict";
  // The server's clock as the page saw it, so "ago" does not depend on the browser's clock.
  var skew = 0;
  var now = function () { return Date.now() - skew; };

  function ago(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h";
    return Math.floor(s / 86400) + " d";
  }

  function tick() {
    var times = document.querySelectorAll("time[data-ago]");
    for (var i = 0; i < times.length; i++) {
      var at = Date.parse(times[i].getAttribute("datetime"));
      if (!isNaN(at)) times[i].textContent = ago(now() - at);
    }
  }

  // The live indicator, and the state on <body> that dims the controls while not live.
  // `why` explains a refusal (the server's own words) under the header.
  function setLive(state, text, why) {
    var live = document.getElementById("live");
    if (live) { live.dataset.state = state; live.textContent = text; }
    document.body.dataset.live = state;
    var note = document.getElementById("live-why");
    if (note) { note.textContent = why || ""; note.hidden = !why; }
  }

  // A stream the browser closed for good was refused (a reconnect after a network error
  // keeps it "connecting"): ask once, with a plain request, what the server says, so the
  // operator reads "8 streams ... close one" instead of "reconnecting" for ever. A stream
  // this request happens to open is closed at once.
  var probing = false;
  function explainRefusal(url) {
    if (probing || !window.fetch || !window.AbortController) return;
    probing = true;
    var abort = new AbortController();
    fetch(url, { headers: { Accept: "text/event-stream" }, signal: abort.signal, cache: "no-store" })
      .then(function (answer) {
        if (answer.ok) { abort.abort(); return; }
        return answer.text().then(function (body) {
          var text = messageOf(body) || ("the server answered " + answer.status);
          if (answer.status === 429 || answer.status === 503) {
            setLive("refused", "not live", "Live updates are off: " + text + ". Each server keeps at most 32 live dashboard pages, one session 4 and one token 8 (API streams included); this page retries by itself and goes live once one is closed.");
          }
        });
      })
      .catch(function () { /* the server is away: keep "reconnecting" */ })
      .then(function () { probing = false; });
  }

  // The text of an HTML error answer (the server's flash message), without its "reload" link.
  function messageOf(html) {
    var template = document.createElement("template");
    template.innerHTML = html || "";
    var link = template.content.querySelector("a");
    if (link) link.remove();
    return template.content.textContent.trim();
  }

  // A message next to the control that was clicked: in its card's or row's actions.
  function noteBeside(elt, text) {
    if (!elt || !elt.parentNode) return;
    var box = elt.closest(".actions") || elt.parentNode;
    var note = box.querySelector(".action-note");
    if (!note) {
      note = document.createElement("span");
      note.className = "action-note";
      note.setAttribute("role", "alert");
      box.appendChild(note);
    }
    note.textContent = text;
  }

  // The charts: one point a minute (the server folds each minute's samples into one), over
  // the page's range (1 h or 24 h, `data-range` seconds), with the y axis from zero and at
  // least a sensible span, so a flat line with jitter stays flat instead of filling the box.
  var charts = [];
  // Counters become "per minute": the difference from the minute before, never negative
  // (retention prunes finished jobs, so their count may drop).
  function perMinute(samples, value) {
    var prev = null;
    return samples.map(function (s) {
      var rate = prev === null ? null : Math.max(0, value(s) - value(prev));
      prev = s;
      return rate;
    });
  }
  function seriesFor(kind, history) {
    // {chart name: [series labels, [xs, ys...], least span of the y axis]}.
    var out = {};
    if (kind === "worker") {
      var xs = history.map(function (s) { return s.t; });
      out.heartbeat = [["age"], [xs, history.map(function (s) { return s.heartbeat_age_ms == null ? null : s.heartbeat_age_ms / 1000; })], 10];
      out.memory = [["RSS"], [xs, history.map(function (s) { return s.rss_bytes == null ? null : s.rss_bytes / 1048576; })], 64];
      out.jobs = [["processed", "failed"], [xs, perMinute(history, function (s) { return s.processed; }), perMinute(history, function (s) { return s.failed; })], 5];
    } else {
      var names = Object.keys(history).sort();
      var times = {};
      names.forEach(function (n) { history[n].forEach(function (s) { times[s.t] = true; }); });
      var xq = Object.keys(times).map(Number).sort(function (a, b) { return a - b; });
      var depth = [xq], thr = [xq], lat = [xq];
      names.forEach(function (n) {
        var byT = {};
        history[n].forEach(function (s) { byT[s.t] = s; });
        var rates = perMinute(history[n], function (s) { return s.completed + s.failed; });
        var rateByT = {};
        history[n].forEach(function (s, i) { rateByT[s.t] = rates[i]; });
        depth.push(xq.map(function (t) { var s = byT[t]; return s ? s.available + s.scheduled + s.running : null; }));
        lat.push(xq.map(function (t) { var s = byT[t]; return s ? (s.oldest_wait_ms || 0) / 1000 : null; }));
        thr.push(xq.map(function (t) { return t in rateByT ? rateByT[t] : null; }));
      });
      out.depth = [names, depth, 5];
      out.throughput = [names, thr, 5];
      out.latency = [names, lat, 10];
    }
    return out;
  }

  // Chart times are UTC like every other time on the pages: "16:05".
  function hhmm(t) {
    var d = new Date(t * 1000);
    return ("0" + d.getUTCHours()).slice(-2) + ":" + ("0" + d.getUTCMinutes()).slice(-2);
  }

  var colours = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#1b7c83"];
  function drawCharts(history) {
    var box = document.querySelector("[data-charts]");
    if (!box || typeof uPlot === "undefined") return;
    var data = seriesFor(box.dataset.charts, history);
    // How many minutes are drawn, and how many samples they fold: tests wait for these.
    var first = data[Object.keys(data)[0]];
    box.dataset.points = first ? first[1][0].length : 0;
    var folded = 0;
    (Array.isArray(history) ? [history] : Object.keys(history).map(function (n) { return history[n]; }))
      .forEach(function (samples) { samples.forEach(function (s) { folded = Math.max(folded, s.n || 0); }); });
    box.dataset.foldedMax = folded;
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    var style = getComputedStyle(document.body);
    var ink = style.getPropertyValue("--muted").trim() || "#57606a";
    var grid = style.getPropertyValue("--line").trim() || "#d0d7de";
    var end = now() / 1000;
    var start = end - range();
    box.querySelectorAll(".chart").forEach(function (el) {
      var entry = data[el.dataset.series];
      if (!entry) return;
      el.textContent = "";
      var least = entry[2];
      var series = [{}].concat(entry[0].map(function (label, i) {
        return { label: label, stroke: colours[i % colours.length], width: 1.5, points: { size: 3 } };
      }));
      var axis = { stroke: ink, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
      var width = Math.max(240, el.clientWidth || 300);
      charts.push(new uPlot({
        width: width,
        height: 150,
        series: series,
        // A compact legend, only when there is more than one line, without the live values
        // (which jump as the pointer moves).
        legend: { show: entry[0].length > 1, live: false },
        cursor: { points: { size: 5 } },
        scales: {
          x: { time: true, range: function () { return [start, end]; } },
          y: { range: function (u, min, max) { return [0, Math.max(least, (max || 0) * 1.15)]; } },
        },
        tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
        axes: [
          Object.assign({ values: function (u, splits) { return splits.map(hhmm); } }, axis),
          Object.assign({ size: 44 }, axis),
        ],
        // Where the y axis starts, for the browser test.
        hooks: { setScale: [function (u, key) { if (key === "y") el.dataset.yMin = u.scales.y.min; }] },
      }, entry[1], el));
    });
  }

  // What the charts draw: the page's history, then each `history` event's minutes merged in
  // (the newest minute again as it fills up; all of it again when `reset`), trimmed to the
  // page's range.
  var history = null;
  function range() {
    var box = document.querySelector("[data-charts]");
    return (box && Number(box.dataset.range)) || 3600;
  }
  function appendSamples(old, fresh) {
    fresh = fresh || [];
    var from = fresh.length ? fresh[0].t : Infinity;
    var since = now() / 1000 - range() - 60;
    return (old || []).filter(function (s) { return s.t < from; }).concat(fresh)
      .filter(function (s) { return s.t >= since; });
  }
  function applyHistory(update) {
    if (update.reset || history === null) {
      history = Array.isArray(update.data) ? appendSamples([], update.data) : update.data;
      if (!Array.isArray(history)) {
        var trimmed = {};
        Object.keys(history).forEach(function (name) { trimmed[name] = appendSamples([], history[name]); });
        history = trimmed;
      }
    } else if (Array.isArray(history)) {
      history = appendSamples(history, update.data);
    } else {
      var next = {};
      Object.keys(update.data).forEach(function (name) {
        next[name] = appendSamples(history[name], update.data[name]);
      });
      history = next;
    }
    drawCharts(history);
  }

  function loadHistory() {
    var script = document.getElementById("history");
    if (!script) return;
    try { applyHistory({ reset: true, data: JSON.parse(script.textContent) }); } catch (e) { /* no history yet */ }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var served = Number(document.body.dataset.now);
    if (served) skew = Date.now() - served;
    tick();
    setInterval(tick, 1000);
    loadHistory();
    document.querySelectorAll("form.filters select").forEach(function (select) {
      select.addEventListener("change", function () { select.form.requestSubmit(); });
    });
  });

  document.addEventListener("htmx:afterSwap", tick);

  // Relative time on hover for every UTC time the pages show, and the UTC time on hover for
  // the ticking "ago" ones: one format everywhere.
  document.addEventListener("mouseover", function (event) {
    var time = event.target.closest && event.target.closest("time[datetime]");
    if (!time) return;
    var at = Date.parse(time.getAttribute("datetime"));
    if (isNaN(at)) return;
    time.title = time.hasAttribute("data-ago")
      ? new Date(at).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC")
      : ago(now() - at) + " ago";
  });

  // Destructive actions carry hx-confirm with what they will do: asked in the page's own
  // dialog (window.confirm can be silenced by the browser), sent only on "Yes".
  document.addEventListener("htmx:confirm", function (event) {
    var question = event.detail.question;
    var elt = event.detail.elt;
    var dialog = document.getElementById("confirm");
    if (!question || !dialog || !dialog.showModal) return;
    event.preventDefault();
    // Clicked again by "Yes" below, on the button that replaced the one asked about.
    if (elt.coinsenseiConfirmed) {
      elt.coinsenseiConfirmed = false;
      event.detail.issueRequest(true);
      return;
    }
    document.getElementById("confirm-text").textContent = question;
    // What the action does, said once per page (the last part of its path names it), not on
    // every button of a hundred cards.
    var action = (elt.getAttribute("hx-post") || "").split("/").pop();
    var why = document.getElementById("confirm-whys").content.querySelector('[data-action="' + CSS.escape(action) + '"]');
    document.getElementById("confirm-why").textContent = why ? why.textContent : "";
    var yes = document.getElementById("confirm-yes");
    yes.textContent = "Yes, " + elt.textContent.trim().toLowerCase();
    dialog.returnValue = "";
    dialog.onclose = function () {
      if (dialog.returnValue !== "yes") return;
      if (document.body.contains(elt)) { event.detail.issueRequest(true); return; }
      // The live stream sent the card (or row) again while the dialog was open (a heartbeat
      // does): htmx sends nothing for a button no longer on the page, so "Yes" goes to the
      // button that took its place, if it still allows the action.
      var path = elt.getAttribute("hx-post");
      var fresh = path && document.querySelector('[hx-post="' + CSS.escape(path) + '"]');
      if (fresh && !fresh.disabled) {
        fresh.coinsenseiConfirmed = true;
        fresh.click();
      } else {
        noteBeside(fresh, "Not sent: this changed while you were asked; look again.");
      }
    };
    dialog.showModal();
    document.getElementById("confirm-no").focus();
  });

  // An action that could not be sent, or that the server refused, says so beside its control
  // (not in the page's message area, out of sight on a long page).
  document.addEventListener("htmx:beforeRequest", function (event) {
    var box = event.detail.elt && event.detail.elt.closest && event.detail.elt.closest(".actions");
    var note = box && box.querySelector(".action-note");
    if (note) note.remove();
  });
  document.addEventListener("htmx:beforeSwap", function (event) {
    var detail = event.detail;
    if (detail.xhr.status < 400 || !detail.requestConfig || detail.requestConfig.verb !== "post") return;
    if (detail.xhr.getResponseHeader("hx-redirect")) return;
    noteBeside(detail.requestConfig.elt, "Refused: " + messageOf(detail.serverResponse));
    detail.shouldSwap = false;
  });
  document.addEventListener("htmx:sendError", function (event) {
    noteBeside(event.detail.elt, "Not sent: the control plane cannot be reached. Nothing changed; try again once the page shows live.");
  });

  // The failed-jobs table is sent again whole: the error histories the operator opened stay
  // open. The approvals table too: a reason being typed (and where the cursor was) stays.
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var target = event.target;
    if (!target || !target.querySelectorAll) return;
    target.coinsenseiOpened = [].map.call(target.querySelectorAll("details[open][id]"), function (d) { return d.id; });
    target.coinsenseiKept = [].map.call(target.querySelectorAll("input[data-keep][id]"), function (input) {
      return { id: input.id, value: input.value, focused: document.activeElement === input, end: input.selectionEnd };
    }).filter(function (kept) { return kept.value || kept.focused; });
  });
  document.addEventListener("htmx:sseMessage", function (event) {
    (event.target.coinsenseiOpened || []).forEach(function (id) {
      var details = document.getElementById(id);
      if (details) details.open = true;
    });
    (event.target.coinsenseiKept || []).forEach(function (kept) {
      var input = document.getElementById(kept.id);
      if (!input || input.disabled) return;
      input.value = kept.value;
      if (kept.focused) { input.focus(); input.setSelectionRange(kept.end, kept.end); }
    });
  });
  document.addEventListener("htmx:sseOpen", function (event) {
    setLive("live", "live");
    var source = event.detail && event.detail.source;
    if (source && !source.coinsenseiListening) {
      source.coinsenseiListening = true;
      source.addEventListener("history", function (message) {
        try { applyHistory(JSON.parse(message.data)); } catch (e) { /* ignore a bad sample */ }
      });
      source.addEventListener("session-ended", function () { window.location.assign("/login"); });
    }
  });
  // The newest audit entry on the page (0 when none).
  function newestAudit() {
    var row = document.querySelector("#audit-rows tr[id^='audit-']");
    return row ? Number(row.id.slice(6)) || 0 : 0;
  }

  document.addEventListener("htmx:sseError", function (event) {
    // A refusal stays explained while htmx retries; a lost connection says "reconnecting".
    if (document.body.dataset.live !== "refused") setLive("lost", "reconnecting");
    var source = event.detail && event.detail.source;
    // The browser reconnects by itself with Last-Event-ID; if it gives up, htmx opens a new
    // stream from this attribute: it asks for every card again (`resync`) and for the audit
    // entries after the newest one shown, since the page may have missed changes meanwhile.
    var main = document.getElementById("main");
    var url = main && main.getAttribute("sse-connect");
    if (!url) return;
    var parts = url.split("?");
    var params = new URLSearchParams(parts[1] || "");
    params.delete("at");
    params.set("resync", "1");
    if (params.has("after")) params.set("after", String(newestAudit()));
    main.setAttribute("sse-connect", parts[0] + "?" + params.toString());
    if (source && source.readyState === 2) explainRefusal(url);
  });

  // New audit rows go on top, each once: a row whose id the page shows already is skipped
  // (a reconnect may send an entry again). The live table keeps its newest rows only.
  var AUDIT_ROWS_SHOWN_MAX = 500;
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var message = event.detail;
    var body = event.target;
    if (!message || message.type !== "audit" || !body || body.id !== "audit-rows") return;
    event.preventDefault();
    var template = document.createElement("template");
    template.innerHTML = message.data;
    var first = body.firstChild;
    template.content.querySelectorAll("tr[id]").forEach(function (row) {
      if (!document.getElementById(row.id)) body.insertBefore(row, first);
    });
    var rows = body.querySelectorAll("tr");
    for (var i = AUDIT_ROWS_SHOWN_MAX; i < rows.length; i++) rows[i].remove();
    var empty = document.querySelector("p.empty");
    if (empty && rows.length) empty.remove();
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) {
      var flash = document.getElementById("flash");
      if (flash && event.detail.target !== flash) flash.textContent = "";
    }
  });
})();
