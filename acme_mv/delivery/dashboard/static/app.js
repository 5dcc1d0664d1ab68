// The ACME reports page: polls /api/data (304 until a refresh lands), renders
// the totals, the tables and the server-drawn chart, and ticks the freshness every second.
// No dependencies, nothing fetched from anywhere but this server.
"use strict";
(function () {
  const body = document.body;
  const number = (text, fallback) => (Number.isFinite(parseFloat(text)) ? parseFloat(text) : fallback);
  const staleAfter = number(body.dataset.staleAfter, 60);
  const pollEvery = Math.max(number(body.dataset.pollEvery, 2), 0.1) * 1000;
  const NUMERIC = new Set(["open_orders", "pending_items", "pending_orders", "product_id", "customer_id"]);
  // report columns in words (the CSV keeps the export's names)
  const LABELS = {
    delivery_date: "Delivery date",
    status: "Status",
    open_orders: "Open orders",
    product_id: "Product no.",
    product_name: "Product",
    pending_items: "Pending items",
    customer_id: "Customer no.",
    customer_name: "Customer",
    pending_orders: "Pending orders",
  };
  // what a NULL means in each column
  const EMPTY = { delivery_date: "no date", customer_name: "(no name)", product_name: "(no name)", pending_items: "0" };
  // how the tie under a top table names its rows and value
  const TIE_WORDS = { top_dates: ["dates", "open order"], top_customers: ["customers", "pending order"] };
  const formatNumber = new Intl.NumberFormat();
  let etag = null;
  let data = null;
  let clockOffset = 0; // server time minus this browser's time, in ms
  const sort = {}; // table id -> {column, dir}

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function label(column) {
    return LABELS[column] || column.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
  }

  function formatCell(column, value) {
    if (value === "") return EMPTY[column] || "";
    if (NUMERIC.has(column) && /^-?\d+$/.test(value)) return formatNumber.format(Number(value));
    if (column === "status") return value.charAt(0) + value.slice(1).toLowerCase();
    return value;
  }

  // one cell: the text in words, the raw CSV value in data-value
  function cellHtml(column, value) {
    const cls = [NUMERIC.has(column) ? "num" : "", column === "delivery_date" ? "date" : "", value === "" ? "none" : ""]
      .filter(Boolean).join(" ");
    return "<td" + (cls ? ' class="' + cls + '"' : "") + ' data-value="' + escapeHtml(value) + '">' +
      escapeHtml(formatCell(column, value)) + "</td>";
  }

  function sortedRows(name, report) {
    const state = sort[name];
    if (!state) return report.rows;
    const i = report.columns.indexOf(state.column);
    const sign = state.dir === "asc" ? 1 : -1;
    return report.rows.map((r, k) => [r, k]).sort((a, b) => sign * (Number(a[0][i]) - Number(b[0][i])) || a[1] - b[1]).map((p) => p[0]);
  }

  // before today (the server's date); "-infinity" and BC dates too, "infinity" and "" never
  function isOverdue(day) {
    if (/^\d{4}-\d\d-\d\d$/.test(day)) return day < data.today;
    return day.startsWith("-") || day.endsWith(" BC");
  }

  function renderTable(name, report) {
    const table = document.getElementById("report-" + name);
    if (!table) return;
    const sortable = table.dataset.sortable || "";
    const state = sort[name];
    const dateAt = report.columns.indexOf("delivery_date");
    const head = report.columns.map((c) => {
      const cls = (NUMERIC.has(c) ? "num " : "") + (c === sortable ? "sortable" : "");
      const dir = state && state.column === c ? ' data-dir="' + state.dir + '"' : "";
      return '<th class="' + cls.trim() + '" data-column="' + escapeHtml(c) + '"' + dir + ">" + escapeHtml(label(c)) + "</th>";
    }).join("");
    const bodyRows = sortedRows(name, report).map((r) => {
      const overdue = dateAt >= 0 && isOverdue(r[dateAt]);
      return "<tr" + (overdue ? ' class="overdue" title="overdue"' : "") + ">" +
        r.map((v, i) => cellHtml(report.columns[i], v)).join("") + "</tr>";
    }).join("");
    table.innerHTML = "<thead><tr>" + head + "</tr></thead><tbody>" + bodyRows + "</tbody>";
    table.dataset.version = data.version;
  }

  function renderTie(name) {
    const el = document.getElementById("tie-" + name);
    if (!el) return;
    const tie = (data.ties || {})[name];
    el.hidden = !tie;
    if (!tie) return;
    const words = TIE_WORDS[name] || ["rows", "value"];
    const value = Number(tie.value);
    el.textContent = formatNumber.format(tie.tied) + " " + words[0] + " tied at " + formatNumber.format(value) +
      " " + words[1] + (value === 1 ? "" : "s") + "; showing " + formatNumber.format(tie.shown) + " of them.";
  }

  function renderTotals() {
    for (const [name, value] of Object.entries(data.totals || {})) {
      const el = document.getElementById("total-" + name);
      if (!el) continue;
      el.hidden = value === null;
      el.dataset.value = value === null ? "" : String(value);
      el.querySelector(".value").textContent = value === null ? "" : formatNumber.format(value);
    }
  }

  function renderChart() {
    document.getElementById("chart").innerHTML = data.chart;
  }

  function render() {
    renderTotals();
    for (const [name, report] of Object.entries(data.reports)) {
      renderTable(name, report);
      renderTie(name);
    }
    renderChart();
    const asOf = new Date(data.as_of_ms);
    document.getElementById("as-of").textContent = "(" + asOf.toLocaleString([], { dateStyle: "medium", timeStyle: "medium" }) + ")";
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
    const which = Object.entries(key).map(([c, v]) => c + " = " + (v === null ? "NULL" : v)).join(", ");
    panel.querySelector("#detail-title").textContent = report + ": " + which;
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
    const head = doc.columns.map((c) => "<th>" + escapeHtml(label(c)) + "</th>").join("");
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
      const cell = tr.cells[columns.indexOf(column)];
      const text = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent;  // the raw value, not its display
      key[column] = text === "" ? null : text;
    }
    showDetail(report, key);
  });

  setInterval(tick, 1000);
  poll();
})();
