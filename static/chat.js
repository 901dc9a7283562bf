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
  const jumpButton = $("jump-latest");
  const modelSettings = JSON.parse($("model-settings").textContent || "{}");
  const remembered = JSON.parse($("remembered-settings").textContent || "null");
  let conversationId = chat.dataset.conversation ? Number(chat.dataset.conversation) : null;
  let socket = null;
  let retryDelay = 500;
  // The request waiting for "accepted": {reply: bubble, undo: function restoring the page}.
  let pending = null;
  const live = new Map(); // generation id -> {el, text, seq}
  // Follow new text only while the reader is at the bottom of the conversation.
  let following = true;

  function showError(text) {
    const line = $("error");
    line.textContent = text;
    line.hidden = !text;
  }

  function hint(text) {
    const line = $("busy-hint");
    line.textContent = text;
    line.hidden = !text;
  }

  // --- Scrolling that respects the reader -------------------------------------------
  function atBottom() {
    return messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
  }

  function toBottom() {
    messages.scrollTop = messages.scrollHeight;
    following = true;
    jumpButton.hidden = true;
  }

  // New content arrived: keep up with it if the reader is following, else offer a jump.
  function grew() {
    if (following) messages.scrollTop = messages.scrollHeight;
    else jumpButton.hidden = false;
  }

  messages.addEventListener("scroll", function () {
    following = atBottom();
    if (following) jumpButton.hidden = true;
  }, { passive: true });
  jumpButton.addEventListener("click", toBottom);

  // --- Bubbles and their tools ------------------------------------------------------
  function bubble(role, text, before) {
    const hello = $("hello");
    if (hello) hello.remove();
    const el = document.createElement("article");
    el.className = "msg " + role;
    const body = document.createElement("div");
    body.className = "body";
    body.textContent = text;
    el.appendChild(body);
    const source = document.createElement("textarea");
    source.className = "source";
    source.hidden = true;
    source.value = text;
    el.appendChild(source);
    const tools = document.createElement("div");
    tools.className = "tools";
    el.appendChild(tools);
    messages.insertBefore(el, before || null);
    return el;
  }

  function sourceOf(el) {
    const source = el.querySelector(".source");
    return source ? source.value : el.querySelector(".body").textContent;
  }

  // A copy button on the message (the text as written: markdown for a reply).
  function addCopy(el) {
    const tools = el.querySelector(".tools");
    if (!tools || tools.querySelector(".copy-message")) return;
    const button = window.Atelier.copyButton("copy-message", "Copy the message", function () {
      return sourceOf(el);
    });
    const stamp = tools.querySelector(".stamp");
    tools.insertBefore(button, stamp);
  }

  function clock(iso) {
    const when = new Date(iso);
    const today = new Date();
    const sameDay = when.toDateString() === today.toDateString();
    const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return sameDay ? time : when.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time;
  }

  // "14:02 · 0.4 s to first token · 23.1 tokens/s", from the reply's recorded timings.
  function fillStamp(stamp) {
    const parts = [clock(stamp.dataset.written)];
    if (stamp.dataset.ttft) parts.push(Number(stamp.dataset.ttft).toFixed(1) + " s to first token");
    if (stamp.dataset.speed) parts.push(Number(stamp.dataset.speed).toFixed(1) + " tokens/s");
    stamp.textContent = parts.join(" · ");
    stamp.title = "Written " + new Date(stamp.dataset.written).toLocaleString();
  }

  function setStamp(el, timings) {
    if (!timings || !timings.written_at) return;
    const tools = el.querySelector(".tools");
    let stamp = tools.querySelector(".stamp");
    if (!stamp) {
      stamp = document.createElement("span");
      stamp.className = "stamp";
      tools.appendChild(stamp);
    }
    stamp.dataset.written = timings.written_at;
    if (timings.first_token_seconds !== null) stamp.dataset.ttft = timings.first_token_seconds;
    if (timings.tokens_per_second !== null) stamp.dataset.speed = timings.tokens_per_second;
    fillStamp(stamp);
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
    addCopy(el);
  }

  function setBusy(busy) {
    sendButton.hidden = busy;
    stopButton.hidden = !busy;
    if (!busy) hint("");
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

  // --- Model and settings -----------------------------------------------------------
  function setRange(id, value) {
    $(id).value = value;
    $(id + "-value").textContent = $(id).value;
  }

  function applySettings(values) {
    if (!values) return;
    if (values.temperature !== undefined) setRange("temperature", values.temperature);
    if (values.top_p !== undefined) setRange("top-p", values.top_p);
    if (values.repetition_penalty !== undefined) setRange("repetition-penalty", values.repetition_penalty);
    if (values.max_tokens !== undefined) $("max-tokens").value = values.max_tokens;
  }

  // The picker tells about the chosen model: its description, its defaults, and whether
  // it takes a system prompt.
  function describeModel() {
    const about = modelSettings[$("model").value];
    if (!about) {
      $("model-about").textContent = "";
      return null;
    }
    const defaults = "defaults: temperature " + about.temperature + ", top p " + about.top_p +
      ", up to " + about.max_tokens + " tokens" +
      (about.repetition_penalty !== 1 ? ", repetition penalty " + about.repetition_penalty : "");
    $("model-about").textContent = (about.description ? about.description + " · " : "") + defaults;
    $("system-label").hidden = !about.system_prompt;
    $("no-system").hidden = about.system_prompt;
    return about;
  }

  $("model").addEventListener("change", function () {
    applySettings(describeModel()); // another model: its own defaults
  });
  $("reset-settings").addEventListener("click", function () {
    applySettings(modelSettings[$("model").value]);
  });
  ["temperature", "top-p", "repetition-penalty"].forEach(function (id) {
    $(id).addEventListener("input", function () { $(id + "-value").textContent = this.value; });
  });
  applySettings(describeModel());
  applySettings(remembered); // this conversation's latest reply's settings

  function sampling() {
    const model = $("model").value;
    const about = modelSettings[model];
    return {
      model: model ? Number(model) : null,
      temperature: Number($("temperature").value),
      top_p: Number($("top-p").value),
      repetition_penalty: Number($("repetition-penalty").value),
      max_tokens: Number($("max-tokens").value),
      about: about,
    };
  }

  function frameWith(frame, withSystem) {
    const params = sampling();
    const about = params.about;
    delete params.about;
    if (withSystem && (!about || about.system_prompt)) frame.system = $("system").value;
    return Object.assign(frame, params);
  }

  // --- Sending ----------------------------------------------------------------------
  function busy() {
    return !!pending || live.size > 0;
  }

  function ready() {
    if (busy()) {
      hint("A reply is still being written: wait for it to finish, or press Esc (or Stop) to end it.");
      return false;
    }
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showError("Not connected yet; try again in a moment.");
      return false;
    }
    showError("");
    hint("");
    return true;
  }

  // The conversation a new exchange started: adopt its id, URL and sidebar entry.
  function adoptConversation(event) {
    if (event.created_conversation) {
      conversationId = event.conversation;
      chat.dataset.conversation = String(event.conversation);
      history.replaceState(null, "", "/chat/" + event.conversation + "/");
      const list = $("conversations");
      const empty = list.querySelector(".empty");
      if (empty) empty.remove();
      list.querySelectorAll("li.current").forEach((li) => li.classList.remove("current"));
      const li = document.createElement("li");
      li.className = "current";
      li.dataset.conversation = String(event.conversation);
      const a = document.createElement("a");
      a.href = "/chat/" + event.conversation + "/";
      a.textContent = event.title;
      li.appendChild(a);
      list.prepend(li);
      document.title = event.title + " · Atelier";
      chat.dataset.titleSource = "auto";
    }
  }

  // The model writes the title after the first reply: show it when it arrives.
  function awaitTitle() {
    if (!conversationId || chat.dataset.titleSource !== "auto") return;
    if (messages.querySelectorAll(".msg.assistant").length !== 1) return;
    const id = conversationId;
    let tries = 0;
    const look = function () {
      if (id !== conversationId || tries++ > 30) return;
      fetch("/chat/" + id + "/title/", { headers: { Accept: "application/json" } })
        .then((response) => (response.ok ? response.json() : null))
        .then(function (found) {
          if (!found) return;
          if (found.source === "auto") {
            setTimeout(look, 2000);
            return;
          }
          chat.dataset.titleSource = found.source;
          showTitle(found.title);
        })
        .catch(function () { setTimeout(look, 4000); });
    };
    setTimeout(look, 1500);
  }

  function showTitle(title) {
    document.title = title + " · Atelier";
    const heading = $("conversation-title");
    if (heading) heading.textContent = title;
    const rename = document.querySelector(".rename input[name=title]");
    if (rename) rename.value = title;
    const entry = document.querySelector('#conversations a[href="/chat/' + conversationId + '/"]');
    if (entry) entry.textContent = title;
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

  function onDone(state, event) {
    const el = state.el;
    note(el, "");
    el.querySelector(".body").innerHTML = event.html; // rendered and sanitized on the server
    el.querySelector(".source").value = event.text || "";
    window.Atelier.decorate(el);
    el.classList.remove("streaming");
    el.dataset.status = event.status;
    if (event.status === "stopped" || event.status === "failed" || event.status === "blocked") {
      const meta = document.createElement("div");
      meta.className = "meta" + (event.status === "stopped" ? "" : " error");
      meta.textContent =
        event.status === "failed" ? event.error
        : event.status === "blocked" ? "blocked by the content policy" : "stopped";
      el.insertBefore(meta, el.querySelector(".tools"));
    }
    if (event.finish_reason === "input_blocked") {
      // A moderation model on the worker blocked the message itself.
      const user = el.previousElementSibling;
      if (user && user.classList.contains("user")) user.classList.add("blocked");
    }
    setStamp(el, event.timings);
    live.delete(event.generation);
    if (live.size === 0) setBusy(false);
    grew();
    if (event.status === "done") awaitTitle();
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
      grew();
    } else if (event.type === "status") {
      state.el.dataset.status = event.status;
      if (event.status === "requeued") {
        // Its worker died; the reply starts over on another worker.
        state.text = "";
        body.textContent = "";
        note(state.el, "The worker stopped unexpectedly; starting this reply again…", true);
      }
    } else if (event.type === "done") {
      onDone(state, event);
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
    toBottom();
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
    send(frameWith({ type: "message", conversation: conversationId, content: content }, true));
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
    send(frameWith({ type: "regenerate", message: Number(old.dataset.message) }, false));
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
      send(frameWith({ type: "edit", message: Number(el.dataset.message), content: content }, true));
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

  // ‹ 1/2 ›: show another version without reloading the page (settings, drafts and
  // scroll stay); the form posts as before when scripts are off.
  messages.addEventListener("submit", function (e) {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("branch-nav")) return;
    e.preventDefault();
    if (busy()) {
      hint("Wait for the reply to finish (or stop it with Esc) before switching versions.");
      return;
    }
    const body = new FormData(form);
    if (e.submitter && e.submitter.name) body.set(e.submitter.name, e.submitter.value);
    const keep = messages.scrollTop;
    fetch(form.action, { method: "POST", body: body, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        const page = new DOMParser().parseFromString(html, "text/html");
        const shown = page.getElementById("messages");
        if (!shown) throw new Error("no messages in the page");
        messages.replaceChildren(...Array.from(shown.childNodes).map((n) => document.importNode(n, true)));
        prepare(messages);
        messages.scrollTop = keep;
        following = atBottom();
      })
      .catch(function () {
        showError("Could not switch versions; reload the page to try again.");
      });
  });

  input.addEventListener("keydown", function (e) {
    // An input method composing a word (Chinese, Japanese, ...) uses Enter to confirm it.
    if (e.isComposing || e.keyCode === 229) return;
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });

  function stopAll() {
    live.forEach(function (_state, generation) {
      send({ type: "stop", generation: generation });
    });
  }
  stopButton.addEventListener("click", stopAll);
  document.addEventListener("keydown", function (e) {
    if (e.key !== "Escape" || e.isComposing || live.size === 0) return;
    if (document.body.classList.contains("drawer-open")) return; // Esc closes the drawer first
    e.preventDefault();
    stopAll();
    hint("Stopping…");
  });

  // Bubbles rendered by the server: copy buttons, stamps, and the replies that were
  // still being written when the page was rendered, streamed from where they are.
  function prepare(container) {
    window.Atelier.decorate(container);
    container.querySelectorAll(".msg[data-message]").forEach(addCopy);
    container.querySelectorAll(".stamp[data-written]").forEach(fillStamp);
    container.querySelectorAll(".msg.assistant[data-generation]").forEach(function (el) {
      const status = el.dataset.status;
      if (status === "queued" || status === "running") {
        const generation = Number(el.dataset.generation);
        el.querySelector(".body").textContent = "";
        el.classList.add("streaming");
        live.set(generation, { el: el, text: "", seq: 0 });
        setBusy(true);
        send({ type: "subscribe", generation: generation, after: 0 });
      }
    });
  }

  prepare(messages);
  connect();
  toBottom();
})();
