// The dashboard's own script, loaded after htmx and its SSE extension. It keeps the "last
// seen ... ago" times ticking, shows whether the live stream is connected, asks for
// everything again after a reconnect, adds live audit rows once each, auto-submits the
// filters, and draws the charts.
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

  function setLive(state, text) {
    var live = document.getElementById("live");
    if (live) { live.dataset.state = state; live.textContent = text; }
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

  document.addEventListener("htmx:sseError", function () {
    setLive("lost", "reconnecting");
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
