// A job's page: live progress over /ws/jobs/<id>/ (progress and items events), with
// reconnects. Text from the server is only ever inserted as textContent.
(function () {
  "use strict";
  const root = document.getElementById("job");
  const jobId = root.dataset.job;
  const $ = (id) => document.getElementById(id);
  const ENDED = ["done", "cancelled"];

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    seconds = Math.round(seconds);
    if (seconds < 60) return seconds + " s";
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + (seconds % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function showProgress(p) {
    root.dataset.status = p.status;
    const status = $("status");
    status.textContent = p.status;
    status.className = "status status-" + p.status;
    $("percent").textContent = p.percent + "%";
    const reason = $("paused-reason");
    reason.textContent = p.paused_reason || "";
    reason.hidden = !p.paused_reason;
    $("bar").setAttribute("aria-valuenow", String(p.percent));
    const total = Math.max(1, p.total);
    $("bar-done").style.width = (100 * p.done / total) + "%";
    $("bar-failed").style.width = (100 * (p.failed + p.cancelled) / total) + "%";
    $("count-done").textContent = p.done;
    $("count-failed").textContent = p.failed;
    $("count-cancelled").textContent = p.cancelled;
    $("count-running").textContent = p.running;
    $("count-total").textContent = p.total;
    $("throughput").textContent = p.per_minute ? p.per_minute + "/min" : "–";
    $("eta").textContent = ENDED.includes(p.status) ? "–" : duration(p.eta_seconds);
    document.querySelectorAll("form[data-when]").forEach((form) => {
      let visible = form.dataset.when.split(" ").includes(p.status);
      if (form.hasAttribute("data-needs-failed")) visible = visible && p.retryable > 0;
      form.hidden = !visible;
    });
  }

  function showItems(items) {
    for (const item of items) {
      const row = document.querySelector('#items tr[data-index="' + item.index + '"]');
      if (!row) continue; // on another page of the table
      row.className = "item item-" + item.status;
      row.querySelector(".item-status").textContent = item.status;
      const cell = row.querySelector(".item-result");
      cell.textContent = "";
      if (item.error) {
        const span = document.createElement("span");
        span.className = "error-line";
        span.textContent = item.error;
        cell.appendChild(span);
      } else if (item.status === "done" && !item.output.trim()) {
        const span = document.createElement("span");
        span.className = "muted";
        span.textContent = "(blank output)";
        cell.appendChild(span);
      } else {
        cell.textContent = item.output;
      }
    }
  }

  let delay = 500;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/jobs/" + jobId + "/");
    socket.onopen = () => { $("connection").textContent = ""; delay = 500; };
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.type === "progress") showProgress(event);
      else if (event.type === "items") showItems(event.items);
      else if (event.type === "error") $("connection").textContent = event.message;
    };
    socket.onclose = (close) => {
      if (ENDED.includes(root.dataset.status) && close.code === 1000) return;
      if (close.code === 4401 || close.code === 4404) {
        $("connection").textContent = "Not available; log in again.";
        return;
      }
      if (ENDED.includes(root.dataset.status)) return;
      $("connection").textContent = "Reconnecting…";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }

  showProgress(JSON.parse($("initial-progress").textContent));
  connect();
})();
