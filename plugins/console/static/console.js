// vachat console: one page over the REST API and the /ws socket, no framework, no build step.
//
// Rules this file keeps: every text that came from a user or the server goes on the page with
// textContent (never innerHTML); the socket is re-joined after every reconnect with `since`, and
// messages the server has not acknowledged stay in the outbox and are sent again (the server
// stores a clientMessageId once, so a resend is never a duplicate).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const STORE = window.sessionStorage;
  const TYPING_REPEAT_MS = 3000;  // the server expires typing after a few seconds; keep it alive
  const TYPING_IDLE_MS = 2000;    // no key for this long: typing-stop
  const RECONNECT_MAX_MS = 10000;

  const state = {
    tokens: JSON.parse(STORE.getItem("vachat.tokens") || "null"),
    me: null,
    admin: false,
    conversations: [],
    current: null,              // the open conversation
    lastMessageId: {},          // conversation id -> newest message id seen (for `since`)
    rendered: new Map(),        // message id -> <li>
    replies: new Map(),         // reply message id -> {li, text}
    outbox: new Map(),          // clientMessageId -> send-message data, until acked
    attachments: [],            // [{id, originalName}]
    socket: null,
    socketReady: false,
    reconnectDelay: 500,
    frameIds: 0,
    pending: new Map(),         // frame id -> {resolve, reject}
    typingSentAt: 0,
    typingTimer: null,
    typers: new Map(),          // userId -> name
    generating: new Set(),      // conversation ids with a reply running
  };

  // -- small helpers ---------------------------------------------------------------------

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function notice(text) {
    const box = $("notice");
    box.textContent = text || "";
    box.hidden = !text;
  }

  function newId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return "c-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function when(iso) {
    const date = new Date(iso);
    return isNaN(date) ? "" : date.toLocaleString();
  }

  // -- REST ------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || `HTTP ${status}`);
      this.status = status;
      this.code = body && body.code;
      this.details = (body && body.details) || [];
    }
    describe() {
      const fields = this.details.map((d) => `${d.field}: ${d.message}`).join("; ");
      return fields ? `${this.message} (${fields})` : this.message;
    }
  }

  async function api(method, path, body, { form = false, raw = false, retry = true } = {}) {
    const headers = {};
    if (state.tokens) headers.Authorization = `Bearer ${state.tokens.accessToken}`;
    let payload;
    if (form) payload = body;
    else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(path, { method, headers, body: payload });
    if (response.status === 401 && retry && state.tokens && path !== "/api/auth/refresh") {
      if (await refreshTokens()) return api(method, path, body, { form, raw, retry: false });
      signedOut("Your session ended; sign in again.");
      throw new ApiError(401, { error: "Signed out" });
    }
    if (raw && response.ok) return response;
    const text = await response.text();
    const json = text ? JSON.parse(text) : null;
    if (!response.ok) throw new ApiError(response.status, json);
    return json;
  }

  async function refreshTokens() {
    try {
      const answer = await api("POST", "/api/auth/refresh", { refreshToken: state.tokens.refreshToken }, { retry: false });
      setTokens(answer.data.tokens);
      return true;
    } catch (error) {
      return false;
    }
  }

  function setTokens(tokens) {
    state.tokens = tokens;
    if (tokens) STORE.setItem("vachat.tokens", JSON.stringify(tokens));
    else STORE.removeItem("vachat.tokens");
  }

  // -- signing in and out --------------------------------------------------------------------

  async function signIn(path, body) {
    notice("");
    try {
      const answer = await api("POST", path, body, { retry: false });
      setTokens(answer.data.tokens);
      await start();
    } catch (error) {
      notice(error instanceof ApiError ? error.describe() : String(error));
    }
  }

  function signedOut(message) {
    setTokens(null);
    state.me = null;
    if (state.socket) state.socket.close(1000, "signed out");
    state.socket = null;
    $("nav").hidden = true;
    $("chat-view").hidden = true;
    $("admin-view").hidden = true;
    $("auth-view").hidden = false;
    $("connection").textContent = "offline";
    notice(message || "");
  }

  async function start() {
    const me = await api("GET", "/api/auth/me");
    state.me = me.data;
    const permissions = me.data.permissions || [];
    state.admin = permissions.includes("*") || permissions.includes("admin.dashboard");
    $("whoami").textContent = `${me.data.name || me.data.email}`;
    $("auth-view").hidden = true;
    $("nav").hidden = false;
    $("nav-admin").hidden = !state.admin;
    show("chat");
    await loadConversations();
    connect();
  }

  function show(view) {
    $("chat-view").hidden = view !== "chat";
    $("admin-view").hidden = view !== "admin";
    $("nav-chat").setAttribute("aria-pressed", String(view === "chat"));
    $("nav-admin").setAttribute("aria-pressed", String(view === "admin"));
    if (view === "admin") loadAdmin();
  }

  // -- conversations -------------------------------------------------------------------------

  async function loadConversations() {
    const archived = $("show-archived").checked;
    const answer = await api("GET", `/api/chat/conversations?limit=100&archived=${archived}`);
    state.conversations = answer.data;
    renderConversationList();
  }

  function renderConversationList() {
    const list = $("conversation-list");
    list.replaceChildren();
    for (const conversation of state.conversations) {
      const button = el("button", { type: "button", text: conversation.title || "Untitled",
                                    onclick: () => openConversation(conversation.id) });
      if (state.current && state.current.id === conversation.id) button.setAttribute("aria-current", "true");
      list.append(el("li", {}, button));
    }
  }

  async function openConversation(id) {
    const answer = await api("GET", `/api/chat/conversations/${encodeURIComponent(id)}`);
    if (state.current && state.current.id !== id) sendFrame("leave-conversation", { conversationId: state.current.id });
    state.current = answer.data;
    state.rendered.clear();
    state.replies.clear();
    state.typers.clear();
    $("messages").replaceChildren();
    $("typing").textContent = "";
    $("empty-state").hidden = true;
    $("conversation-panel").hidden = false;
    $("title-input").value = state.current.title;
    $("archive").textContent = state.current.isArchived ? "Unarchive" : "Archive";
    renderConversationList();
    const page = await api("GET", `/api/chat/conversations/${encodeURIComponent(id)}/messages?limit=100`);
    for (const message of page.data.items.slice().reverse()) renderMessage(message);
    join(id);
    $("message-input").focus();
  }

  async function saveConversation(changes) {
    const answer = await api("PUT", `/api/chat/conversations/${encodeURIComponent(state.current.id)}`, changes);
    state.current = answer.data;
    $("archive").textContent = state.current.isArchived ? "Unarchive" : "Archive";
    await loadConversations();
  }

  // -- messages ------------------------------------------------------------------------------

  function renderMessage(message) {
    if (!state.current || message.conversationId !== state.current.id) return;
    state.lastMessageId[message.conversationId] = message.id;
    const reply = state.replies.get(message.id);
    const existing = state.rendered.get(message.id) || (reply && reply.li);
    const li = el("li", { class: `message ${message.role} ${message.type === "error" ? "error" : ""}`,
                          "data-id": message.id, "data-role": message.role });
    const who = message.role === "assistant" ? "Assistant" : (message.userId === state.me.id ? "You" : "Someone");
    const meta = el("div", { class: "meta" }, el("span", { text: who }), el("time", { text: when(message.createdAt) }));
    if (message.isEdited) meta.append(el("span", { text: "edited" }));
    if (message.role === "assistant" && message.metadata && message.metadata.finishReason) {
      meta.append(el("span", { class: "finish", text: message.metadata.finishReason }));
    }
    if (message.role === "assistant") {
      meta.append(el("button", { type: "button", class: "regenerate", text: "Regenerate",
                                 "aria-label": "Regenerate this reply", onclick: () => regenerate(message.id) }));
    }
    li.append(meta, el("div", { class: "text", text: message.content }));
    if (message.files && message.files.length) {
      const files = el("ul", { class: "chips", "aria-label": "Attached files" });
      for (const file of message.files) {
        const name = file.originalName || file.id;
        files.append(el("li", {}, el("button", { type: "button", class: "download", text: `Download ${name}`,
                                                 onclick: () => download(file.id, name) })));
      }
      li.append(files);
    }
    if (existing) existing.replaceWith(li);
    else $("messages").append(li);
    state.rendered.set(message.id, li);
    state.replies.delete(message.id);
    li.scrollIntoView({ block: "end" });
  }

  function removeMessage(id) {
    const li = state.rendered.get(id);
    if (li) li.remove();
    state.rendered.delete(id);
  }

  function replyDelta(data) {
    if (!state.current || data.conversationId !== state.current.id) return;
    let reply = state.replies.get(data.messageId);
    if (!reply) {
      const text = el("div", { class: "text" });
      const li = el("li", { class: "message assistant streaming", "data-id": data.messageId, "data-role": "assistant" },
                    el("div", { class: "meta" }, el("span", { text: "Assistant" }), el("span", { text: "typing…" })), text);
      $("messages").append(li);
      reply = { li, text, index: -1 };
      state.replies.set(data.messageId, reply);
    }
    if (data.index <= reply.index) return;  // seen already (a join's text covers it)
    reply.index = data.index;
    reply.text.textContent += data.delta;
    reply.li.scrollIntoView({ block: "end" });
  }

  function setGenerating(conversationId, running) {
    if (running) state.generating.add(conversationId);
    else state.generating.delete(conversationId);
    $("stop").hidden = !(state.current && state.generating.has(state.current.id));
  }

  async function regenerate(messageId) {
    try {
      await api("POST", `/api/chat/messages/${encodeURIComponent(messageId)}/regenerate`);
    } catch (error) {
      notice(error.describe ? error.describe() : String(error));
    }
  }

  async function download(fileId, name) {
    try {
      const response = await api("GET", `/api/files/${encodeURIComponent(fileId)}/download`, undefined, { raw: true });
      const url = URL.createObjectURL(await response.blob());
      const link = el("a", { href: url, download: name });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (error) {
      notice(error.describe ? error.describe() : String(error));
    }
  }

  async function upload(file) {
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("purpose", "attachment");
    $("send").disabled = true;
    try {
      const answer = await api("POST", "/api/files/upload", form, { form: true });
      state.attachments.push(answer.data);
      renderAttachments();
    } catch (error) {
      notice(error.describe ? error.describe() : String(error));
    } finally {
      $("send").disabled = false;
      $("file-input").value = "";
    }
  }

  function renderAttachments() {
    const list = $("attachments");
    list.replaceChildren();
    state.attachments.forEach((file, index) => {
      list.append(el("li", {}, el("span", { text: file.originalName }), " ",
                     el("button", { type: "button", text: "×", "aria-label": `Remove ${file.originalName}`,
                                    onclick: () => { state.attachments.splice(index, 1); renderAttachments(); } })));
    });
  }

  function send() {
    const text = $("message-input").value;
    if (!state.current || (!text.trim() && !state.attachments.length)) return;
    const data = { conversationId: state.current.id, content: text, clientMessageId: newId(),
                   requiresAIResponse: $("ask-ai").checked };
    if (state.attachments.length) data.files = state.attachments.map((file) => file.id);
    state.outbox.set(data.clientMessageId, data);
    $("message-input").value = "";
    state.attachments = [];
    renderAttachments();
    stopTyping();
    flushOutbox();
  }

  function flushOutbox() {
    $("outbox").textContent = state.outbox.size ? `${state.outbox.size} waiting to be sent` : "";
    if (!state.socketReady) return;
    for (const [clientMessageId, data] of state.outbox) {
      request("send-message", data, clientMessageId).then((message) => {
        state.outbox.delete(clientMessageId);
        $("outbox").textContent = state.outbox.size ? `${state.outbox.size} waiting to be sent` : "";
        renderMessage(message);
      }).catch((error) => {
        if (error instanceof ApiError) {  // refused (not lost): say why and drop it
          state.outbox.delete(clientMessageId);
          notice(error.describe());
          $("outbox").textContent = "";
        }
      });
    }
  }

  // -- typing --------------------------------------------------------------------------------

  function typed() {
    if (!state.current || !state.socketReady) return;
    const now = Date.now();
    if (now - state.typingSentAt > TYPING_REPEAT_MS) {
      state.typingSentAt = now;
      sendFrame("typing-start", { conversationId: state.current.id });
    }
    clearTimeout(state.typingTimer);
    state.typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    clearTimeout(state.typingTimer);
    if (state.typingSentAt && state.current && state.socketReady) {
      sendFrame("typing-stop", { conversationId: state.current.id });
    }
    state.typingSentAt = 0;
  }

  function renderTypers() {
    const names = Array.from(state.typers.values());
    $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
  }

  // -- the socket ----------------------------------------------------------------------------

  function connect() {
    if (!state.tokens) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws`);
    state.socket = socket;
    state.socketReady = false;
    $("connection").textContent = "connecting…";
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "auth", data: { token: state.tokens.accessToken } }));
    });
    socket.addEventListener("message", (event) => onFrame(JSON.parse(event.data)));
    socket.addEventListener("close", async (event) => {
      if (state.socket !== socket) return;  // replaced or signed out
      state.socketReady = false;
      for (const { reject } of state.pending.values()) reject(new Error("disconnected"));
      state.pending.clear();
      $("connection").textContent = "reconnecting…";
      if (event.code === 4401 && !(await refreshTokens())) {
        signedOut("Your session ended; sign in again.");
        return;
      }
      const delay = state.reconnectDelay;
      state.reconnectDelay = Math.min(delay * 2, RECONNECT_MAX_MS);
      setTimeout(connect, delay + Math.random() * 250);
    });
  }

  function sendFrame(type, data, id) {
    if (!state.socket || state.socket.readyState !== WebSocket.OPEN) return false;
    const frame = { type, data };
    if (id !== undefined) frame.id = id;
    state.socket.send(JSON.stringify(frame));
    return true;
  }

  function request(type, data, id) {
    const frameId = id || `f${++state.frameIds}`;
    return new Promise((resolve, reject) => {
      state.pending.set(frameId, { resolve, reject });
      if (!sendFrame(type, data, frameId)) {
        state.pending.delete(frameId);
        reject(new Error("not connected"));
      }
    });
  }

  function join(conversationId) {
    if (!state.socketReady) return;
    const data = { conversationId };
    if (state.lastMessageId[conversationId]) data.since = state.lastMessageId[conversationId];
    request("join-conversation", data).then((answer) => {
      for (const message of answer.missed || []) renderMessage(message);
      for (const id of answer.deleted || []) removeMessage(id);
      if (answer.generation) {
        setGenerating(conversationId, true);
        replyDelta({ conversationId, messageId: answer.generation.messageId, index: answer.generation.index,
                     delta: answer.generation.text });
      }
    }).catch((error) => notice(error.describe ? error.describe() : String(error)));
  }

  function onFrame(frame) {
    const data = frame.data || {};
    if (frame.id !== undefined && state.pending.has(frame.id) && (frame.type === "ack" || frame.type === "error")) {
      const { resolve, reject } = state.pending.get(frame.id);
      state.pending.delete(frame.id);
      if (frame.type === "ack") resolve(data);
      else reject(new ApiError(0, { error: data.message, code: data.code, details: data.details }));
      return;
    }
    switch (frame.type) {
      case "ready":
        state.socketReady = true;
        state.reconnectDelay = 500;
        $("connection").textContent = "connected";
        if (state.current) join(state.current.id);
        flushOutbox();
        break;
      case "new-message":
      case "message-updated":
        renderMessage(data);
        break;
      case "message-deleted":
        removeMessage(data.messageId);
        break;
      case "ai-typing":
        setGenerating(data.conversationId, data.typing);
        break;
      case "ai-delta":
        setGenerating(data.conversationId, true);
        replyDelta(data);
        break;
      case "ai-done":
        setGenerating(data.conversationId, false);
        break;
      case "user-typing":
        if (state.current && data.conversationId === state.current.id && data.userId !== state.me.id) {
          state.typers.set(data.userId, data.userName || "Someone");
          renderTypers();
        }
        break;
      case "user-stopped-typing":
        state.typers.delete(data.userId);
        renderTypers();
        break;
      case "conversation-created":
      case "conversation-updated":
      case "conversation-deleted":
        if (frame.type === "conversation-deleted" && state.current && data.conversationId === state.current.id) {
          state.current = null;
          $("conversation-panel").hidden = true;
          $("empty-state").hidden = false;
        }
        if (frame.type === "conversation-updated" && state.current && data.id === state.current.id) {
          state.current = data;
          $("title-input").value = data.title;
        }
        loadConversations();
        break;
      case "error":
        notice(data.message || data.code);
        break;
      default:
        break;
    }
  }

  // -- search --------------------------------------------------------------------------------

  async function search(text) {
    const results = $("search-results");
    results.replaceChildren();
    results.hidden = !text;
    if (!text) return;
    const answer = await api("GET", `/api/chat/search?q=${encodeURIComponent(text)}&limit=20`);
    const titles = new Map(state.conversations.map((c) => [c.id, c.title]));
    if (!answer.data.items.length) results.append(el("li", { class: "muted", text: "Nothing found." }));
    for (const message of answer.data.items) {
      const label = `${titles.get(message.conversationId) || "Conversation"}: ${message.content.slice(0, 80)}`;
      results.append(el("li", {}, el("button", { type: "button", text: label,
                                                 onclick: () => openConversation(message.conversationId) })));
    }
  }

  // -- administration ------------------------------------------------------------------------

  async function loadAdmin() {
    try {
      const dashboard = (await api("GET", "/api/admin/dashboard")).data;
      const figures = [["Users", dashboard.users.total], ["Active today", dashboard.users.active24h],
                       ["New this week", dashboard.users.new7d], ["Live sockets", dashboard.sockets.live]];
      if (dashboard.conversations) figures.push(["Conversations", dashboard.conversations.total]);
      if (dashboard.messages) figures.push(["Messages", dashboard.messages.total]);
      if (dashboard.files) figures.push(["Files", dashboard.files.count]);
      if (dashboard.ai) figures.push(["AI tokens today", dashboard.ai.tokensToday]);
      $("figures").replaceChildren(...figures.map(([name, value]) =>
        el("div", {}, el("dt", { text: name }), el("dd", { text: String(value ?? "–") }))));
      drawChart((dashboard.messages && dashboard.messages.perDay) || []);
      await loadUsers();
      await loadAudit();
    } catch (error) {
      notice(error.describe ? error.describe() : String(error));
    }
  }

  function drawChart(days) {
    const svg = $("chart");
    const ns = "http://www.w3.org/2000/svg";
    svg.replaceChildren();
    const width = 420, height = 160, bottom = 20, left = 10;
    const max = Math.max(1, ...days.map((d) => d.count));
    const step = days.length ? (width - left * 2) / days.length : 0;
    days.forEach((day, i) => {
      const barHeight = Math.round((height - bottom - 16) * day.count / max);
      const x = left + i * step + step * 0.15;
      const bar = document.createElementNS(ns, "rect");
      bar.setAttribute("x", x);
      bar.setAttribute("y", height - bottom - barHeight);
      bar.setAttribute("width", step * 0.7);
      bar.setAttribute("height", barHeight);
      const title = document.createElementNS(ns, "title");
      title.textContent = `${day.date}: ${day.count}`;
      bar.append(title);
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", x);
      label.setAttribute("y", height - 6);
      label.textContent = day.date.slice(5);
      const count = document.createElementNS(ns, "text");
      count.setAttribute("x", x);
      count.setAttribute("y", height - bottom - barHeight - 3);
      count.textContent = String(day.count);
      svg.append(bar, label, count);
    });
  }

  async function loadUsers() {
    const search = $("user-search").value.trim();
    const answer = await api("GET", `/api/admin/users?limit=50${search ? `&search=${encodeURIComponent(search)}` : ""}`);
    const roles = (await api("GET", "/api/admin/roles")).data.map((role) => role.name);
    const body = $("users").querySelector("tbody");
    body.replaceChildren();
    for (const user of answer.data) {
      const select = el("select", { "aria-label": `Role of ${user.email}` });
      for (const role of roles) {
        const option = el("option", { value: role, text: role });
        if (role === user.role) option.selected = true;
        select.append(option);
      }
      select.addEventListener("change", () => updateUser(user.id, { role: select.value }));
      const toggle = el("button", { type: "button", text: user.isActive ? "Disable" : "Enable",
                                    onclick: () => updateUser(user.id, { isActive: !user.isActive }) });
      body.append(el("tr", {}, el("td", { text: user.email }), el("td", { text: user.name || "" }), el("td", {}, select),
                     el("td", { text: user.isActive ? "yes" : "no" }), el("td", {}, toggle)));
    }
  }

  async function updateUser(id, changes) {
    try {
      await api("PUT", `/api/admin/users/${encodeURIComponent(id)}`, changes);
      notice("");
    } catch (error) {
      notice(error.describe ? error.describe() : String(error));
    }
    await loadUsers();
  }

  async function loadAudit() {
    const query = new URLSearchParams({ limit: "50" });
    const action = $("audit-action").value.trim();
    const user = $("audit-user").value.trim();
    if (action) query.set("action", action);
    if (user) query.set("userId", user);
    for (const [field, name] of [["audit-from", "from"], ["audit-to", "to"]]) {
      const value = $(field).value;
      if (value) query.set(name, new Date(value).toISOString());
    }
    const answer = await api("GET", `/api/admin/audit-logs?${query}`);
    const body = $("audit").querySelector("tbody");
    body.replaceChildren(...answer.data.map((entry) => el("tr", {},
      el("td", { text: when(entry.createdAt) }), el("td", { text: entry.action }),
      el("td", { text: entry.userId || "" }), el("td", { text: entry.ipAddress || entry.ip || "" }))));
  }

  // -- wiring --------------------------------------------------------------------------------

  function on(id, event, handler) {
    $(id).addEventListener(event, (e) => {
      if (event === "submit") e.preventDefault();
      Promise.resolve(handler(e)).catch((error) => notice(error.describe ? error.describe() : String(error)));
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    on("sign-in-form", "submit", () => signIn("/api/auth/login", {
      email: $("sign-in-email").value, password: $("sign-in-password").value }));
    on("sign-up-form", "submit", () => signIn("/api/auth/register", {
      email: $("sign-up-email").value, password: $("sign-up-password").value,
      firstName: $("sign-up-first").value, lastName: $("sign-up-last").value }));
    on("sign-out", "click", async () => {
      try { await api("POST", "/api/auth/logout", {}, { retry: false }); } catch (error) { /* gone already */ }
      signedOut();
    });
    on("nav-chat", "click", () => show("chat"));
    on("nav-admin", "click", () => show("admin"));
    on("new-conversation-form", "submit", async () => {
      const title = $("new-title").value.trim();
      const answer = await api("POST", "/api/chat/conversations", title ? { title } : {});
      $("new-title").value = "";
      await loadConversations();
      await openConversation(answer.data.id);
    });
    on("search-form", "submit", () => search($("search-input").value.trim()));
    on("show-archived", "change", loadConversations);
    on("title-form", "submit", () => saveConversation({ title: $("title-input").value }));
    on("archive", "click", () => saveConversation({ isArchived: !state.current.isArchived }));
    on("delete-conversation", "click", async () => {
      if (!window.confirm(`Delete “${state.current.title}” and all its messages?`)) return;
      await api("DELETE", `/api/chat/conversations/${encodeURIComponent(state.current.id)}`);
      state.current = null;
      $("conversation-panel").hidden = true;
      $("empty-state").hidden = false;
      await loadConversations();
    });
    on("composer", "submit", send);
    on("message-input", "input", typed);
    $("message-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {  // Enter sends, Shift+Enter breaks the line
        event.preventDefault();
        send();
      }
    });
    on("stop", "click", () => request("stop-generation", { conversationId: state.current.id }));
    on("file-input", "change", () => { const file = $("file-input").files[0]; if (file) return upload(file); });
    on("user-filter", "submit", loadUsers);
    on("audit-filter", "submit", loadAudit);

    if (state.tokens) start().catch(() => signedOut());
  });
})();
