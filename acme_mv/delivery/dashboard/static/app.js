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

  setInterval(tick, 1000);
  poll();
})();
