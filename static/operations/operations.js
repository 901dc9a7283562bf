// The Operations page refreshes its tables from /operations/state.json every 5 seconds.
// Each table names its list (data-rows) and each header cell its field (data-key) and how
// to show it (data-format); text is only ever set as textContent.
(function () {
  "use strict";
  const root = document.getElementById("operations");
  if (!root) return;
  const url = root.dataset.stateUrl;
  const dash = "—";
  function bytes(v) {
    if (v === null || v === undefined) return dash;
    if (v >= 1024 ** 3) return (v / 1024 ** 3).toFixed(1) + " GB";
    return (v / 1024 ** 2).toFixed(1) + " MB";
  }
  const formats = {
    text: (v) => (v === null || v === undefined || v === "" ? dash : String(v)),
    list: (v) => (v && v.length ? v.join(", ") : dash),
    bytes: bytes,
    ms: (v) => (v === null || v === undefined ? dash : Math.round(v * 1000) + " ms"),
    rate: (v) => (v === null || v === undefined ? dash : v.toFixed(1)),
    time: (v) => (v ? new Date(v).toLocaleString() : dash),
    error: (v) => v || dash,
    models: (v) =>
      v && v.length
        ? v.map((m) => `${m.name} (${m.device}, ${m.rows}/${m.max_batch} rows, ${bytes(m.weights_bytes)})`).join("; ")
        : "none",
  };
  function fill(table, rows) {
    const heads = Array.from(table.querySelectorAll("thead th"));
    const body = table.tBodies[0];
    const empty = body.querySelector("tr.empty");
    const emptyText = empty ? empty.textContent : "";
    body.replaceChildren();
    if (!rows.length) {
      const tr = body.insertRow();
      tr.className = "empty";
      const td = tr.insertCell();
      td.colSpan = heads.length;
      td.textContent = emptyText;
      return;
    }
    for (const row of rows) {
      const tr = body.insertRow();
      if (table.id === "queues" && row.waiting && !row.workers) tr.className = "bad";
      for (const th of heads) {
        const td = tr.insertCell();
        const format = formats[th.dataset.format || "text"];
        td.textContent = format(row[th.dataset.key]);
        if (th.dataset.format === "error") td.className = "error";
      }
    }
  }
  async function refresh() {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const state = await response.json();
      for (const table of root.querySelectorAll("table[data-rows]")) {
        fill(table, state[table.dataset.rows] || []);
      }
      document.getElementById("refreshed").textContent = new Date(state.at).toLocaleString();
    } catch (error) {
      // The next round tries again (the server may be restarting).
    }
  }
  setInterval(refresh, 5000);
})();
