// The chat page: one WebSocket, the protocol in docs/protocol.md.
// Streaming text is shown as plain text (textContent); the finished reply is replaced
// by HTML that the server rendered from markdown and sanitized.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const chat = $("chat");
  const messages = $("messages");
  const input = $("input");
  const sendButton = $("send");
  const stopButton = $("stop");
  let conversationId = chat.dataset.conversation ? Number(chat.dataset.conversation) : null;
  let socket = null;
  let retryDelay = 500;
  let pending = null; // the assistant bubble waiting for "accepted"
  const live = new Map(); // generation id -> {el, text, seq}

  function showError(text) {
    const line = $("error");
    line.textContent = text;
    line.hidden = !text;
  }

  function bubble(role, text) {
    const hello = $("hello");
    if (hello) hello.remove();
    const el = document.createElement("article");
    el.className = "msg " + role;
    const body = document.createElement("div");
    body.className = "body";
    body.textContent = text;
    el.appendChild(body);
    messages.appendChild(el);
    el.scrollIntoView({ block: "end" });
    return el;
  }

  function setBusy(busy) {
    sendButton.hidden = busy;
    stopButton.hidden = !busy;
  }

  function track(generation, el, after) {
    el.dataset.generation = generation;
    el.classList.add("streaming");
    const state = live.get(generation) || { el: el, text: "", seq: after || 0 };
    live.set(generation, state);
    setBusy(true);
    send({ type: "subscribe", generation: generation, after: state.seq });
  }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
  }

  function onEvent(event) {
    if (event.type === "accepted") {
      if (event.created_conversation) {
        conversationId = event.conversation;
        history.replaceState(null, "", "/chat/" + event.conversation + "/");
        const list = $("conversations");
        const empty = list.querySelector(".empty");
        if (empty) empty.remove();
        const li = document.createElement("li");
        li.className = "current";
        const a = document.createElement("a");
        a.href = "/chat/" + event.conversation + "/";
        a.textContent = event.title;
        li.appendChild(a);
        list.prepend(li);
      }
      if (pending) {
        pending.dataset.generation = event.generation;
        pending.classList.add("streaming");
        live.set(event.generation, { el: pending, text: "", seq: 0 });
        pending = null;
      }
      return;
    }
    if (event.type === "error") {
      showError(event.message);
      if (pending) {
        pending.remove();
        pending = null;
        setBusy(false);
      }
      return;
    }
    const state = live.get(event.generation);
    if (!state) return;
    if (event.seq && event.seq <= state.seq) return; // already shown (after a resubscribe)
    if (event.seq) state.seq = event.seq;
    const body = state.el.querySelector(".body");
    if (event.type === "token") {
      state.text += event.text;
      body.textContent = state.text;
      state.el.scrollIntoView({ block: "end" });
    } else if (event.type === "status") {
      state.el.dataset.status = event.status;
    } else if (event.type === "done") {
      body.innerHTML = event.html; // rendered and sanitized on the server
      state.el.classList.remove("streaming");
      state.el.dataset.status = event.status;
      if (event.status === "stopped" || event.status === "failed") {
        const meta = document.createElement("div");
        meta.className = "meta" + (event.status === "failed" ? " error" : "");
        meta.textContent = event.status === "failed" ? event.error : "stopped";
        state.el.appendChild(meta);
      }
      live.delete(event.generation);
      if (live.size === 0) setBusy(false);
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(scheme + "://" + location.host + "/ws/chat/");
    socket.onopen = function () {
      retryDelay = 500;
      $("connection").textContent = "";
      // Resume every reply still streaming (after a reload or a dropped connection).
      live.forEach(function (state, generation) {
        send({ type: "subscribe", generation: generation, after: state.seq });
      });
    };
    socket.onmessage = function (message) {
      onEvent(JSON.parse(message.data));
    };
    socket.onclose = function (closed) {
      if (closed.code === 4401) {
        location.href = "/accounts/login/?next=" + encodeURIComponent(location.pathname);
        return;
      }
      $("connection").textContent = "Reconnecting…";
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 8000);
    };
  }

  $("composer").addEventListener("submit", function (e) {
    e.preventDefault();
    const content = input.value.trim();
    if (!content || pending || live.size > 0) return;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showError("Not connected yet; try again in a moment.");
      return;
    }
    showError("");
    bubble("user", content);
    pending = bubble("assistant", "");
    pending.classList.add("streaming");
    setBusy(true);
    const model = $("model").value;
    send({
      type: "message",
      conversation: conversationId,
      model: model ? Number(model) : null,
      content: content,
      system: $("system").value,
      temperature: Number($("temperature").value),
      max_tokens: Number($("max-tokens").value),
    });
    input.value = "";
  });

  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });

  stopButton.addEventListener("click", function () {
    live.forEach(function (_state, generation) {
      send({ type: "stop", generation: generation });
    });
  });

  $("temperature").addEventListener("input", function () {
    $("temperature-value").textContent = this.value;
  });

  // Replies that were still being written when the page was rendered: stream them.
  document.querySelectorAll(".msg.assistant[data-generation]").forEach(function (el) {
    const status = el.dataset.status;
    if (status === "queued" || status === "running") {
      el.querySelector(".body").textContent = "";
      live.set(Number(el.dataset.generation), { el: el, text: "", seq: 0 });
      el.classList.add("streaming");
      setBusy(true);
    }
  });

  connect();
  messages.lastElementChild && messages.lastElementChild.scrollIntoView({ block: "end" });
})();
