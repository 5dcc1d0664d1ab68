// The ACME reports page: polls /api/data (304 until a refresh lands), renders
// the tables and the server-drawn chart, and ticks the freshness every second.
// No dependencies, nothing fetched from anywhere but this server.
"use strict";
(function () {
  const body = document.body;
  const number = (text, fallback) => (Number.isFinite(parseFloat(text)) ? parseFloat(text) : fallback);
  const staleAfter = number(body.dataset.staleAfter, 60);
  const pollEvery = Math.max(number(body.dataset.pollEvery, 2), 0.1) * 1000;
  const NUMERIC = new Set(["open_orders", "pending_items", "pending_orders", "product_id", "customer_id"]);
  let etag = null;
  let data = null;
  let clockOffset = 0; // server time minus this browser's time, in ms
  const sort = {}; // table id -> {column, dir}

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function renderTable(name, report) {
    const table = document.getElementById("report-" + name);
    if (!table) return;
    const sortable = table.dataset.sortable || "";
    const state = sort[name];
    let rows = report.rows;
    if (state) {
      const i = report.columns.indexOf(state.column);
      const sign = state.dir === "asc" ? 1 : -1;
      rows = rows.map((r, k) => [r, k]).sort((a, b) => sign * (Number(a[0][i]) - Number(b[0][i])) || a[1] - b[1]).map((p) => p[0]);
    }
    const head = report.columns.map((c) => {
      const cls = (NUMERIC.has(c) ? "num " : "") + (c === sortable ? "sortable" : "");
      const dir = state && state.column === c ? ' data-dir="' + state.dir + '"' : "";
      return '<th class="' + cls.trim() + '" data-column="' + escapeHtml(c) + '"' + dir + ">" + escapeHtml(c) + "</th>";
    }).join("");
    const bodyRows = rows.map((r) => "<tr>" + r.map((v, i) =>
      '<td' + (NUMERIC.has(report.columns[i]) ? ' class="num"' : "") + ">" + escapeHtml(v) + "</td>").join("") + "</tr>").join("");
    table.innerHTML = "<thead><tr>" + head + "</tr></thead><tbody>" + bodyRows + "</tbody>";
    table.dataset.version = data.version;
  }

  function render() {
    for (const [name, report] of Object.entries(data.reports)) renderTable(name, report);
    document.getElementById("chart").innerHTML = data.chart;
    const asOf = new Date(data.as_of_ms);
    document.getElementById("as-of").textContent = "(" + asOf.toLocaleString() + ", refresh batch " + data.refreshed_batch_id + ")";
    body.dataset.version = data.version;
    tick();
  }

  function tick() {
    if (!data) return;
    const age = Math.max(0, (Date.now() + clockOffset - data.as_of_ms) / 1000);
    const box = document.getElementById("freshness");
    document.getElementById("age").textContent = formatAge(age);
    box.classList.toggle("stale", age > staleAfter);
    box.dataset.ageSeconds = age.toFixed(0);
  }

  function formatAge(s) {
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return (s / 3600).toFixed(1) + " h ago";
    return Math.round(s / 86400) + " days ago";
  }

  function showError(text) {
    const el = document.getElementById("error");
    el.hidden = !text;
    el.textContent = text || "";
  }

  async function poll() {
    try {
      const headers = etag ? { "If-None-Match": etag } : {};
      const res = await fetch("/api/data", { headers: headers, cache: "no-store" });
      const serverTime = Number(res.headers.get("x-server-time"));
      if (serverTime) clockOffset = serverTime - Date.now();
      if (res.status === 200) {
        data = await res.json();
        etag = res.headers.get("etag");
        showError("");
        render();
      } else if (res.status === 304) {
        showError("");
      } else {
        const doc = await res.json().catch(() => ({}));
        showError(doc.error || "The server answered " + res.status);
      }
    } catch (e) {
      showError("The dashboard server is not reachable; retrying.");
    }
    setTimeout(poll, pollEvery);
  }

  document.addEventListener("click", (ev) => {
    const th = ev.target.closest("th.sortable");
    if (!th || !data) return;
    const name = th.closest("table").id.replace(/^report-/, "");
    const column = th.dataset.column;
    const prev = sort[name];
    sort[name] = { column: column, dir: prev && prev.column === column && prev.dir === "desc" ? "asc" : "desc" };
    renderTable(name, data.reports[name]);
  });

  // The detail: clicking a report row or a chart bar shows the orders (order items) behind it.
  const detailKeys = JSON.parse(body.dataset.detailKeys || "{}");

  function detailPanel() {
    let panel = document.getElementById("detail");
    if (panel) return panel;
    panel = document.createElement("section");
    panel.id = "detail";
    panel.className = "card wide detail";
    panel.hidden = true;
    panel.innerHTML = '<h2><span id="detail-title"></span><button type="button" id="detail-close" ' +
      'aria-label="Close the detail">Close</button></h2><p id="detail-summary" class="detail-summary"></p>' +
      '<div class="scroll"><table id="detail-rows"></table></div>';
    document.querySelector("main").prepend(panel);
    panel.querySelector("#detail-close").addEventListener("click", () => { panel.hidden = true; });
    return panel;
  }

  async function showDetail(report, key) {
    const panel = detailPanel();
    const label = Object.entries(key).map(([c, v]) => c + " = " + (v === null ? "NULL" : v)).join(", ");
    panel.querySelector("#detail-title").textContent = report + ": " + label;
    panel.querySelector("#detail-summary").textContent = "loading…";
    panel.querySelector("#detail-rows").innerHTML = "";
    delete panel.querySelector("#detail-rows").dataset.total;
    panel.hidden = false;
    const query = "report=" + encodeURIComponent(report) + "&key=" + encodeURIComponent(JSON.stringify(key));
    let doc;
    try {
      const res = await fetch("/api/detail?" + query, { cache: "no-store" });
      doc = await res.json();
      if (!res.ok) throw new Error(doc.error || "The server answered " + res.status);
    } catch (e) {
      panel.querySelector("#detail-summary").textContent = e.message;
      return;
    }
    const shown = doc.truncated ? " (the first " + doc.rows.length + ")" : "";
    panel.querySelector("#detail-summary").textContent =
      "total " + doc.total + " over " + doc.count + " rows" + shown;
    const head = doc.columns.map((c) => "<th>" + escapeHtml(c) + "</th>").join("");
    const rows = doc.rows.map((r) => "<tr>" + r.map((v) =>
      "<td>" + (v === null ? "" : escapeHtml(v)) + "</td>").join("") + "</tr>").join("");
    const table = panel.querySelector("#detail-rows");
    table.innerHTML = "<thead><tr>" + head + "</tr></thead><tbody>" + rows + "</tbody>";
    table.dataset.total = doc.total;
  }

  document.addEventListener("click", (ev) => {
    const bar = ev.target.closest("#chart rect[data-key]");
    if (bar) {
      showDetail("open_orders", JSON.parse(bar.dataset.key));
      return;
    }
    const tr = ev.target.closest("table[id^='report-'] tbody tr");
    if (!tr) return;
    const report = tr.closest("table").id.replace(/^report-/, "");
    const columns = Array.from(tr.closest("table").tHead.rows[0].cells, (c) => c.dataset.column);
    const key = {};
    for (const column of detailKeys[report] || []) {
      const text = tr.cells[columns.indexOf(column)].textContent;
      key[column] = text === "" ? null : text;
    }
    showDetail(report, key);
  });

  setInterval(tick, 1000);
  poll();
})();
