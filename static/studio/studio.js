// The one-shot pages: a result streaming in over /ws/generations/<id>/ (docs/protocol.md),
// copy, stop; the forms' helpers (character count, file checks, image preview and drag and
// drop, the languages each translation model offers).
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);

  function formatSize(bytes) {
    return bytes >= 1048576 ? (bytes / 1048576).toFixed(1) + " MiB" : Math.ceil(bytes / 1024) + " KiB";
  }

  // --- A result streaming in ------------------------------------------------------------
  function followResult(article) {
    const generation = article.dataset.generation;
    const output = $("output");
    const status = $("status");
    const queue = $("queue");
    let seq = 0;
    let finished = article.dataset.finished === "1";
    let socket = null;
    let retry = 500;

    function setStatus(value) {
      article.dataset.status = value;
      status.textContent = value;
      status.className = "status status-" + value;
    }

    function renderLabels(labels) {
      const list = $("labels");
      list.replaceChildren();
      for (const item of labels) {
        const percent = Math.round(item.score * 1000) / 10;
        const row = document.createElement("li");
        const label = document.createElement("span");
        label.className = "label";
        label.textContent = item.label;
        const bar = document.createElement("span");
        bar.className = "bar";
        const fill = document.createElement("span");
        fill.style.width = percent + "%";
        bar.appendChild(fill);
        const pct = document.createElement("span");
        pct.className = "pct";
        pct.textContent = percent + "%";
        row.append(label, bar, pct);
        list.appendChild(row);
      }
    }

    function done(event) {
      finished = true;
      article.dataset.finished = "1";
      setStatus(event.status);
      queue.textContent = "";
      if (output) {
        if (typeof event.text === "string") output.textContent = event.text;
        output.classList.remove("streaming");
      }
      if (event.error) {
        $("failure").textContent = event.error;
        $("failure").hidden = false;
      }
      const detected = $("detected-source");
      if (detected && event.result && event.result.source) {
        const names = JSON.parse($("language-names").textContent);
        detected.textContent = (names[event.result.source] || event.result.source) + " (detected)";
      }
      // A "translation" that is the text it was given: say so (the server does on reload).
      const doubtful = $("doubtful");
      const given = $("input-text");
      if (doubtful && given && event.status === "done" && typeof event.text === "string") {
        const same = (t) => t.split(/\s+/).join(" ").trim().toLowerCase();
        const sameLanguage = event.result && event.result.source && event.result.source === event.result.target;
        if (same(event.text) === same(given.textContent) || sameLanguage) {
          doubtful.textContent = sameLanguage ? doubtful.dataset.sameLanguage : doubtful.dataset.unchanged;
          doubtful.hidden = false;
        }
      }
      if ($("labels")) {
        if (event.result && event.result.labels) renderLabels(event.result.labels);
        else if (event.status === "done") location.reload(); // the labels are on the page
      }
      $("stop").hidden = true;
      for (const id of ["copy", "download"]) if ($(id)) $(id).hidden = false;
      if (socket) socket.close();
    }

    function onEvent(event) {
      if (event.seq && event.seq <= seq) return; // already shown
      if (event.seq) seq = event.seq;
      if (event.type === "token") {
        if (output) output.textContent += event.text;
        queue.textContent = "";
      } else if (event.type === "status") {
        if (event.status === "requeued") {
          if (output) output.textContent = "";
          queue.textContent = "The worker stopped; starting again on another one…";
        } else setStatus(event.status);
      } else if (event.type === "queue" || event.type === "worker_lost") {
        queue.textContent = event.message;
      } else if (event.type === "running") {
        setStatus("running");
        queue.textContent = "";
      } else if (event.type === "done") {
        done(event);
      } else if (event.type === "error") {
        queue.textContent = event.message;
      }
    }

    function connect() {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(
        scheme + "://" + location.host + "/ws/generations/" + generation + "/?after=" + seq
      );
      socket.onopen = () => { retry = 500; };
      socket.onmessage = (message) => onEvent(JSON.parse(message.data));
      socket.onclose = (close) => {
        socket = null;
        if (finished) return;
        if (close.code === 4401) {
          location.href = "/accounts/login/?next=" + encodeURIComponent(location.pathname);
        } else if (close.code === 4404 || close.code === 4400) {
          queue.textContent = "This result cannot be followed: reload the page.";
        } else {
          queue.textContent = "Connection lost; reconnecting…";
          setTimeout(connect, retry);
          retry = Math.min(retry * 2, 8000);
        }
      };
    }

    $("stop").addEventListener("click", () => {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "stop" }));
    });
    if ($("copy")) {
      $("copy").addEventListener("click", async () => {
        const text = output.textContent;
        try {
          await navigator.clipboard.writeText(text);
        } catch (error) { // no clipboard API (e.g. plain http on another host): select and copy
          const range = document.createRange();
          range.selectNodeContents(output);
          const selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          document.execCommand("copy");
        }
        $("copied").hidden = false;
        setTimeout(() => { $("copied").hidden = true; }, 2000);
      });
    }
    if (!finished) connect();
  }

  // --- Forms ------------------------------------------------------------------------------
  function countCharacters(textarea) {
    const counter = $("text-count");
    const max = Number(textarea.dataset.max);
    const update = () => {
      const length = textarea.value.length;
      counter.textContent = length.toLocaleString() + " characters" + (length > max ? " — too long" : "");
      counter.classList.toggle("error-line", length > max);
    };
    textarea.addEventListener("input", update);
    update();
  }

  function checkFile(input, check) {
    const problem = $("file-problem");
    input.addEventListener("change", () => {
      const file = input.files[0];
      const message = file ? check(file) : "";
      problem.textContent = message;
      problem.hidden = !message;
    });
  }

  function summarizeForm() {
    const input = $("file");
    checkFile(input, (file) => {
      const accepted = input.accept.split(",");
      const suffix = "." + file.name.split(".").pop().toLowerCase();
      if (!accepted.includes(suffix)) return "“" + file.name + "” is not a " + accepted.join(", ") + " file.";
      if (file.size > Number(input.dataset.max)) return "“" + file.name + "” is larger than " + formatSize(Number(input.dataset.max)) + ".";
      return "";
    });
  }

  function classifyForm() {
    const input = $("image");
    const zone = $("dropzone");
    const preview = $("preview");
    const show = () => {
      const file = input.files[0];
      if (!file) return;
      if (preview.src) URL.revokeObjectURL(preview.src);
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
      $("drop-help").textContent = file.name + " (" + formatSize(file.size) + ")";
    };
    checkFile(input, (file) => {
      if (!file.type.startsWith("image/")) return "“" + file.name + "” is not an image.";
      if (file.size > Number(input.dataset.max)) return "“" + file.name + "” is larger than " + formatSize(Number(input.dataset.max)) + ".";
      return "";
    });
    input.addEventListener("change", show);
    for (const name of ["dragenter", "dragover"]) {
      zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("over"); });
    }
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      if (!event.dataTransfer.files.length) return;
      input.files = event.dataTransfer.files;
      input.dispatchEvent(new Event("change"));
    });
  }

  function translateForm() {
    const offers = JSON.parse($("language-offers").textContent);
    const model = $("model");
    const source = $("source");
    const target = $("target");
    const note = $("model-languages");
    const names = {};
    for (const option of target.options) if (option.value) names[option.value] = option.textContent;
    const update = () => {
      const offer = offers[model.value];
      const sourceOk = (code) => !offer || offer.sources === null || offer.sources.includes(code);
      const targetOk = (code) => {
        if (!offer) return true;
        if (offer.pairs && source.value) return offer.pairs.some((p) => p[0] === source.value && p[1] === code);
        return offer.targets.includes(code);
      };
      for (const option of source.options) if (option.value) option.disabled = !sourceOk(option.value);
      for (const option of target.options) if (option.value) option.disabled = !targetOk(option.value);
      if (target.selectedOptions[0] && target.selectedOptions[0].disabled) target.value = "";
      if (offer && !target.value && offer.targets.length === 1) target.value = offer.targets[0];
      if (!offer || offer.family === "chat") note.textContent = "";
      else {
        const from = offer.sources === null ? "any language" : offer.sources.map((c) => names[c] || c).join(", ");
        note.textContent = "This model translates from " + from + " into " + offer.targets.map((c) => names[c] || c).join(", ") + ".";
      }
    };
    model.addEventListener("change", update);
    source.addEventListener("change", update);
    update();
  }

  document.addEventListener("DOMContentLoaded", () => {
    if ($("result")) followResult($("result"));
    if ($("text")) countCharacters($("text"));
    if ($("summarize-form")) summarizeForm();
    if ($("classify-form")) classifyForm();
    if ($("translate-form")) translateForm();
  });
})();
