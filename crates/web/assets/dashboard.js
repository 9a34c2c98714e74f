// The dashboard's own script, loaded after htmx and its SSE extension. It keeps the "last
// seen ... ago" times ticking, shows whether the live stream is connected (and why not, when
// the server refuses it), asks for everything again after a reconnect, adds live audit rows
// once each, asks before a destructive action, says next to a control when its action was
// not sent or was refused, keeps opened error histories open across live updates,
// auto-submits the filters, and draws the charts.
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

  var charts = [];
  function seriesFor(kind, history) {
    // Returns [{label, data: [xs, ys...], series labels}] per chart name.
    var out = {};
    if (kind === "worker") {
      var xs = history.map(function (s) { return s.t; });
      out.heartbeat = [["age"], [xs, history.map(function (s) { return s.heartbeat_age_ms == null ? null : s.heartbeat_age_ms / 1000; })]];
      out.memory = [["RSS"], [xs, history.map(function (s) { return s.rss_bytes == null ? null : s.rss_bytes / 1048576; })]];
      out.jobs = [["processed", "failed"], [xs, history.map(function (s) { return s.processed; }), history.map(function (s) { return s.failed; })]];
    } else {
      var names = Object.keys(history).sort();
      var times = {};
      names.forEach(function (n) { history[n].forEach(function (s) { times[s.t] = true; }); });
      var xq = Object.keys(times).map(Number).sort(function (a, b) { return a - b; });
      var depth = [xq], thr = [xq], lat = [xq];
      names.forEach(function (n) {
        var byT = {};
        history[n].forEach(function (s) { byT[s.t] = s; });
        depth.push(xq.map(function (t) { var s = byT[t]; return s ? s.available + s.scheduled + s.running : null; }));
        lat.push(xq.map(function (t) { var s = byT[t]; return s ? (s.oldest_wait_ms || 0) / 1000 : null; }));
        var prev = null;
        thr.push(xq.map(function (t) {
          var s = byT[t], rate = null;
          if (s && prev) rate = Math.max(0, (s.completed + s.failed - prev.completed - prev.failed) / Math.max(1, s.t - prev.t));
          if (s) prev = s;
          return rate;
        }));
      });
      out.depth = [names, depth];
      out.throughput = [names, thr];
      out.latency = [names, lat];
    }
    return out;
  }

  var colours = ["#0969da", "#a40e26", "#116329", "#7d4e00", "#8250df", "#1b7c83"];
  function drawCharts(history) {
    var box = document.querySelector("[data-charts]");
    if (!box || typeof uPlot === "undefined") return;
    var data = seriesFor(box.dataset.charts, history);
    // How many samples are drawn: tests wait for a line, not just an empty frame.
    var first = data[Object.keys(data)[0]];
    box.dataset.points = first ? first[1][0].length : 0;
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    box.querySelectorAll(".chart").forEach(function (el) {
      var entry = data[el.dataset.series];
      if (!entry) return;
      el.textContent = "";
      var series = [{}].concat(entry[0].map(function (label, i) {
        return { label: label, stroke: colours[i % colours.length], width: 1.5 };
      }));
      var width = Math.max(240, el.clientWidth || 300);
      charts.push(new uPlot({ width: width, height: 150, series: series, legend: { show: entry[0].length > 1 } }, entry[1], el));
    });
  }

  // What the charts draw: the page's history, then each `history` event's new samples
  // appended (or all of it again when `reset`), at most data-samples-max per series.
  var history = null;
  function samplesMax() {
    var box = document.querySelector("[data-charts]");
    return (box && Number(box.dataset.samplesMax)) || 360;
  }
  function appendSamples(old, fresh) {
    var all = (old || []).concat(fresh || []);
    return all.slice(Math.max(0, all.length - samplesMax()));
  }
  function applyHistory(update) {
    if (update.reset || history === null) {
      history = update.data;
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
    var dialog = document.getElementById("confirm");
    if (!question || !dialog || !dialog.showModal) return;
    event.preventDefault();
    document.getElementById("confirm-text").textContent = question;
    var yes = document.getElementById("confirm-yes");
    yes.textContent = "Yes, " + event.detail.elt.textContent.trim().toLowerCase();
    dialog.returnValue = "";
    dialog.onclose = function () {
      if (dialog.returnValue === "yes") event.detail.issueRequest(true);
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
  // open.
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var target = event.target;
    if (!target || !target.querySelectorAll) return;
    target.coinsenseiOpened = [].map.call(target.querySelectorAll("details[open][id]"), function (d) { return d.id; });
  });
  document.addEventListener("htmx:sseMessage", function (event) {
    (event.target.coinsenseiOpened || []).forEach(function (id) {
      var details = document.getElementById(id);
      if (details) details.open = true;
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
