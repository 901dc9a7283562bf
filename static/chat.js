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
  // The request waiting for "accepted": {reply: bubble, undo: function restoring the page}.
  let pending = null;
  const live = new Map(); // generation id -> {el, text, seq}

  function showError(text) {
    const line = $("error");
    line.textContent = text;
    line.hidden = !text;
  }

  function bubble(role, text, before) {
    const hello = $("hello");
    if (hello) hello.remove();
    const el = document.createElement("article");
    el.className = "msg " + role;
    const body = document.createElement("div");
    body.className = "body";
    body.textContent = text;
    el.appendChild(body);
    if (role === "user") {
      const source = document.createElement("textarea");
      source.className = "source";
      source.hidden = true;
      source.value = text;
      el.appendChild(source);
    }
    const tools = document.createElement("div");
    tools.className = "tools";
    el.appendChild(tools);
    messages.insertBefore(el, before || null);
    el.scrollIntoView({ block: "end" });
    return el;
  }

  // The ‹ i/n › control and the Edit / Regenerate button of a message bubble.
  function setTools(el, branch) {
    const tools = el.querySelector(".tools");
    tools.textContent = "";
    if (branch && branch.count > 1) {
      const form = document.createElement("form");
      form.method = "post";
      form.action = "/chat/" + conversationId + "/select/";
      form.className = "branch-nav";
      const csrf = document.createElement("input");
      csrf.type = "hidden";
      csrf.name = "csrfmiddlewaretoken";
      csrf.value = chat.dataset.csrf;
      form.appendChild(csrf);
      const arrow = function (label, target, title) {
        const b = document.createElement("button");
        b.type = "submit";
        b.name = "message";
        b.className = "link";
        b.title = title;
        b.textContent = label;
        b.value = target || "";
        b.disabled = !target;
        return b;
      };
      const count = document.createElement("span");
      count.className = "branch-count";
      count.textContent = branch.index + "/" + branch.count;
      form.append(arrow("‹", branch.previous, "Previous version"), count,
        arrow("›", branch.next, "Next version"));
      tools.appendChild(form);
    }
    const action = document.createElement("button");
    action.type = "button";
    action.className = "link " + (el.classList.contains("user") ? "edit" : "regenerate");
    action.textContent = el.classList.contains("user") ? "Edit" : "Regenerate";
    tools.appendChild(action);
  }

  function setBusy(busy) {
    sendButton.hidden = busy;
    stopButton.hidden = !busy;
  }

  function note(el, text, warn) {
    let line = el.querySelector(".note");
    if (!text) {
      if (line) line.remove();
      return;
    }
    if (!line) {
      line = document.createElement("div");
      line.className = "note";
      el.insertBefore(line, el.querySelector(".tools"));
    }
    line.classList.toggle("warn", !!warn);
    line.textContent = text;
  }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
  }

  function sampling() {
    const model = $("model").value;
    return {
      model: model ? Number(model) : null,
      temperature: Number($("temperature").value),
      max_tokens: Number($("max-tokens").value),
    };
  }

  function ready() {
    if (pending || live.size > 0) return false;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showError("Not connected yet; try again in a moment.");
      return false;
    }
    showError("");
    return true;
  }

  // The conversation a new exchange started: adopt its id, URL and sidebar entry.
  function adoptConversation(event) {
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
  }

  // The message was stored but blocked by the content policy: no reply comes.
  function onBlocked(event) {
    adoptConversation(event);
    if (!pending) return;
    const reply = pending.reply;
    messages.querySelectorAll(".hidden-while-pending").forEach((el) => el.remove());
    const user = reply.previousElementSibling;
    reply.remove();
    if (user && user.classList.contains("user")) {
      user.dataset.message = event.user_message;
      user.classList.add("blocked");
      user.dataset.category = event.category;
      setTools(user, event.branches[event.user_message]);
      note(user, event.message, true);
    }
    pending = null;
    if (live.size === 0) setBusy(false);
  }

  function onAccepted(event) {
    adoptConversation(event);
    if (!pending) return;
    const reply = pending.reply;
    messages.querySelectorAll(".hidden-while-pending").forEach((el) => el.remove());
    const user = reply.previousElementSibling;
    if (user && user.classList.contains("user")) {
      user.dataset.message = event.user_message;
      setTools(user, event.branches[event.user_message]);
    }
    reply.dataset.message = event.assistant_message;
    reply.dataset.generation = event.generation;
    setTools(reply, event.branches[event.assistant_message]);
    live.set(event.generation, { el: reply, text: "", seq: 0 });
    pending = null;
  }

  function onEvent(event) {
    if (event.type === "accepted") return onAccepted(event);
    if (event.type === "blocked") return onBlocked(event);
    if (event.type === "error") {
      showError(event.message);
      if (pending) {
        pending.undo();
        pending = null;
        if (live.size === 0) setBusy(false);
      }
      return;
    }
    const state = live.get(event.generation);
    if (!state) return;
    if (event.type === "queue") return note(state.el, event.message, event.workers === 0);
    if (event.type === "running") return note(state.el, "");
    if (event.type === "worker_lost") return note(state.el, event.message, true);
    if (event.seq && event.seq <= state.seq) return; // already shown (after a resubscribe)
    if (event.seq) state.seq = event.seq;
    const body = state.el.querySelector(".body");
    if (event.type === "token") {
      if (!state.text) note(state.el, "");
      state.text += event.text;
      body.textContent = state.text;
      state.el.scrollIntoView({ block: "end" });
    } else if (event.type === "status") {
      state.el.dataset.status = event.status;
      if (event.status === "requeued") {
        // Its worker died; the reply starts over on another worker.
        state.text = "";
        body.textContent = "";
        note(state.el, "The worker stopped unexpectedly; starting this reply again…", true);
      }
    } else if (event.type === "done") {
      note(state.el, "");
      body.innerHTML = event.html; // rendered and sanitized on the server
      state.el.classList.remove("streaming");
      state.el.dataset.status = event.status;
      if (event.status === "stopped" || event.status === "failed" || event.status === "blocked") {
        const meta = document.createElement("div");
        meta.className = "meta" + (event.status === "stopped" ? "" : " error");
        meta.textContent =
          event.status === "failed" ? event.error
          : event.status === "blocked" ? "blocked by the content policy" : "stopped";
        state.el.insertBefore(meta, state.el.querySelector(".tools"));
      }
      if (event.finish_reason === "input_blocked") {
        // A moderation model on the worker blocked the message itself.
        const user = state.el.previousElementSibling;
        if (user && user.classList.contains("user")) user.classList.add("blocked");
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

  function startReply(before) {
    const reply = bubble("assistant", "", before);
    reply.classList.add("streaming");
    setBusy(true);
    return reply;
  }

  // A user bubble and a reply bubble waiting for "accepted"; on an error both go and
  // restore() puts the page back as it was.
  function startExchange(content, restore) {
    const user = bubble("user", content);
    const reply = startReply();
    pending = {
      reply: reply,
      undo: function () {
        user.remove();
        reply.remove();
        restore();
      },
    };
  }

  $("composer").addEventListener("submit", function (e) {
    e.preventDefault();
    const content = input.value.trim();
    if (!content || !ready()) return;
    startExchange(content, function () {
      input.value = content;
    });
    send(Object.assign({
      type: "message",
      conversation: conversationId,
      content: content,
      system: $("system").value,
    }, sampling()));
    input.value = "";
  });

  function regenerate(old) {
    if (!ready()) return;
    old.classList.add("hidden-while-pending");
    const reply = startReply(old.nextSibling);
    pending = {
      reply: reply,
      undo: function () {
        reply.remove();
        old.classList.remove("hidden-while-pending");
      },
    };
    send(Object.assign({ type: "regenerate", message: Number(old.dataset.message) }, sampling()));
  }

  function openEditor(el) {
    if (el.querySelector(".editor")) return;
    const editor = document.createElement("div");
    editor.className = "editor";
    const area = document.createElement("textarea");
    area.value = el.querySelector(".source").value;
    const row = document.createElement("div");
    row.className = "row";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    const save = document.createElement("button");
    save.type = "button";
    save.className = "primary";
    save.textContent = "Send";
    row.append(cancel, save);
    editor.append(area, row);
    el.querySelector(".body").hidden = true;
    el.insertBefore(editor, el.querySelector(".tools"));
    area.focus();
    const close = function () {
      editor.remove();
      el.querySelector(".body").hidden = false;
    };
    cancel.addEventListener("click", close);
    save.addEventListener("click", function () {
      const content = area.value.trim();
      if (!content || !ready()) return;
      close();
      // The edited message and everything after it make way for the new branch.
      const hidden = [];
      for (let node = el; node; node = node.nextElementSibling) {
        node.classList.add("hidden-while-pending");
        hidden.push(node);
      }
      startExchange(content, function () {
        hidden.forEach((node) => node.classList.remove("hidden-while-pending"));
      });
      send(Object.assign({
        type: "edit",
        message: Number(el.dataset.message),
        content: content,
        system: $("system").value,
      }, sampling()));
    });
  }

  messages.addEventListener("click", function (e) {
    const target = e.target;
    if (!(target instanceof HTMLElement)) return;
    const el = target.closest(".msg");
    if (!el || !el.dataset.message) return;
    if (target.classList.contains("regenerate")) regenerate(el);
    else if (target.classList.contains("edit")) openEditor(el);
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
