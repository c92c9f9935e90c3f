// The chat page. It talks to the wsmvc controller of app.py (endpoint /chat, namespace
// "chat") with wsmvc.js, the client that the chat server itself serves next to its
// endpoint: Server.mount(app, "/chat") also answers GET /chat/wsmvc.js. So there is no
// CDN, no npm, no build step, and the page works without internet access; the client is
// always the one of the server's wsmvc version. This file keeps a little state and draws it.
//
// wsmvc.js calls the handlers in `events` with (nsConn, message).
//
// Reconnecting is on by default: when the connection is lost (a restart, a network change)
// the client says so through the events below (forced _OnRoomLeft, _OnNamespaceDisconnect),
// tries again with backoff, and once back it connects the namespace and joins the rooms
// again, one at a time, firing _OnNamespaceConnected and _OnRoomJoined as on the first
// connect. The page just follows those events; the server's OnPresence messages bring the
// online counts up to date. What the user sends meanwhile waits, and goes once back.
//
// Written for wsmvc.js, the page keeps to what it shares with neffos.js (the handler table,
// the system events, joinRoom, room.emit, leave), so neffos.js, the protocol's own browser
// client, runs it too once given the two things it lacks: room.ask, and reconnecting by
// default (tests/browser/test_chat.py runs it so).

import { dial } from "/chat/wsmvc.js";

const NAMESPACE = "chat";
const ENDPOINT = "/chat"; // relative: ws://<this host>/chat (wss:// under https)
const FIRST_ROOM = "lobby";
const TYPING_SHOWN_MS = 4000;
const TYPING_SENT_EVERY_MS = 2000;
const MAX_LINES = 200; // kept per room
const NAME_KEY = "wsmvc-chat:name";

const STATUS_TEXT = {
  connecting: "connecting…",
  online: "online",
  reconnecting: "reconnecting…",
  offline: "offline",
};

const $ = (id) => document.getElementById(id);

const state = {
  name: "",
  ns: null, // the namespace connection (NSConn), from _OnNamespaceConnected
  rooms: new Map(), // room name -> room state (newRoom), in the order joined
  active: "", // the room shown on the right
  typingSentAt: 0,
};

function newRoom(name) {
  return {
    name,
    joined: false,
    names: [], // who is online there, as the server last said
    rev: 0, // the revision of `names`: an older OnPresence arriving late is dropped
    lines: [], // {kind: "chat" | "notice", from, text, at}
    unread: 0,
    typing: new Map(), // name -> the timer that hides "name is typing…"
  };
}

// -- what the server sends ------------------------------------------------------------

const events = {
  _OnNamespaceConnected(ns) {
    // On the first connect, and again each time the connection is back. wsmvc.js gives
    // the same NSConn each time (neffos.js a new one: taking it here serves both).
    state.ns = ns;
    if (ns.conn.wasReconnected()) {
      // A restarted server counts revisions from 1 again.
      for (const room of state.rooms.values()) room.rev = 0;
    }
    setStatus("online");
  },

  _OnNamespaceDisconnect() {
    // The connection was lost (the chat never disconnects the namespace otherwise): the
    // client is trying to get it back. If it ever gives up, onClosed (in enter) says so.
    setStatus("reconnecting");
  },

  _OnRoomJoined(ns, msg) {
    const room = state.rooms.get(msg.Room);
    if (!room) return;
    room.joined = true;
    render();
  },

  _OnRoomLeft(ns, msg) {
    // Forced: the connection is gone. The client joins the room again once it is back.
    // (A leave the user asked for is handled in leaveRoom.)
    const room = state.rooms.get(msg.Room);
    if (!room || !msg.IsForced) return;
    room.joined = false;
    clearTyping(room);
    render();
  },

  OnChat(ns, msg) {
    const room = state.rooms.get(msg.Room);
    if (!room) return;
    const line = JSON.parse(msg.Body);
    stopTyping(room, line.from);
    addLine(room, { kind: "chat", from: line.from, text: line.text, at: line.at });
  },

  OnTyping(ns, msg) {
    const room = state.rooms.get(msg.Room);
    if (!room) return;
    const who = msg.Body;
    clearTimeout(room.typing.get(who));
    room.typing.set(who, setTimeout(() => stopTyping(room, who), TYPING_SHOWN_MS));
    if (room.name === state.active) renderTyping();
  },

  OnPresence(ns, msg) {
    const room = state.rooms.get(msg.Room);
    if (!room) return;
    const presence = JSON.parse(msg.Body);
    if (presence.rev <= room.rev) return;
    if (room.rev > 0) announceChanges(room, room.names, presence.names);
    room.rev = presence.rev;
    room.names = presence.names;
    // Whoever is no longer in the room (left it, closed the tab, lost the connection)
    // is no longer typing there either, whatever their last notice said.
    for (const who of [...room.typing.keys()]) {
      if (!presence.names.includes(who)) stopTyping(room, who);
    }
    render();
  },
};

function announceChanges(room, before, after) {
  for (const name of after) {
    if (!before.includes(name) && name !== state.name) {
      addLine(room, { kind: "notice", text: `${name} joined` });
    }
  }
  for (const name of before) {
    if (!after.includes(name) && name !== state.name) {
      addLine(room, { kind: "notice", text: `${name} left` });
    }
  }
}

// -- what the user does ---------------------------------------------------------------

async function enter(name) {
  setStatus("connecting");
  let conn;
  try {
    conn = await dial(ENDPOINT, { [NAMESPACE]: events }, {
      // The name is the connection id (app.py's id_generator reads this header). A browser
      // cannot set websocket headers: the client sends ?X-Websocket-Header-X-Name=...,
      // which the server reads as the header.
      headers: { "X-Name": name },
      // Over for good: closed by the page, or the client gave up reconnecting.
      onClosed: () => setStatus("offline"),
    });
    await conn.connect(NAMESPACE); // the server checks the name here
  } catch (err) {
    // A refused name: without the namespace the connection is of no use. (A failed dial
    // has no connection to close.)
    conn?.close();
    setStatus("offline");
    throw err;
  }
  state.name = name;
  localStorage.setItem(NAME_KEY, name);
  $("me").textContent = `you are ${name}`;
  $("me").hidden = false;
  $("login").hidden = true;
  $("chat").hidden = false;
  await joinRoom(FIRST_ROOM);
  $("message").focus();
}

async function joinRoom(name) {
  let room = state.rooms.get(name);
  if (!room) {
    room = newRoom(name);
    state.rooms.set(name, room); // before joining: OnPresence may come before the answer
  }
  try {
    await state.ns.joinRoom(name);
  } catch (err) {
    if (!room.joined) state.rooms.delete(name);
    throw err;
  }
  show(name);
}

async function leaveRoom(name) {
  const joined = state.ns.room(name);
  if (!joined) throw new Error("not connected, wait a moment");
  await joined.leave(); // rejects with the server's refusal, if it refuses
  const room = state.rooms.get(name);
  clearTyping(room);
  state.rooms.delete(name);
  const next = state.rooms.keys().next();
  show(next.done ? "" : next.value);
}

async function say(text) {
  const room = state.ns.room(state.active);
  if (!room) throw new Error("not connected, wait a moment");
  // Resolves with the server's "sent" (the line itself comes as OnChat, to every member),
  // or rejects with the server's error text. While reconnecting it waits to be sent.
  await room.ask("OnSay", text);
}

function typed() {
  const room = state.ns.room(state.active);
  const now = Date.now();
  if (!room || !$("message").value.trim() || now - state.typingSentAt < TYPING_SENT_EVERY_MS) {
    return;
  }
  state.typingSentAt = now;
  room.emit("OnTyping", "");
}

function show(name) {
  state.active = name;
  $("send-error").textContent = "";
  const room = state.rooms.get(name);
  if (room) room.unread = 0;
  render();
  renderLines();
  renderTyping();
}

// -- drawing --------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  const { dataset = {}, style = {}, ...rest } = props;
  Object.assign(node, rest);
  Object.assign(node.dataset, dataset);
  for (const [key, value] of Object.entries(style)) node.style.setProperty(key, value);
  node.append(...children);
  return node;
}

function setStatus(kind) {
  $("status").dataset.state = kind;
  $("status").textContent = STATUS_TEXT[kind];
}

function render() {
  renderRooms();
  renderHeader();
}

function renderRooms() {
  const items = [...state.rooms.values()].map((room) => {
    const classes = ["room-item"];
    if (room.name === state.active) classes.push("active");
    if (!room.joined) classes.push("away");
    return el(
      "li",
      { className: classes.join(" "), dataset: { room: room.name } },
      el("button", { type: "button", className: "room-link" }, `#${room.name}`),
      room.unread ? el("span", { className: "unread", title: "unread" }, String(room.unread)) : "",
      el(
        "span",
        { className: "count", title: `${room.names.length} online` },
        String(room.names.length),
      ),
    );
  });
  $("rooms").replaceChildren(...items);
}

function renderHeader() {
  const room = state.rooms.get(state.active);
  $("empty").hidden = Boolean(room);
  for (const id of ["room-title", "room-online", "room-names", "leave", "send-form"]) {
    $(id).hidden = !room;
  }
  if (!room) return;
  $("room-title").textContent = `#${room.name}`;
  $("room-online").textContent = room.joined ? `${room.names.length} online` : "reconnecting…";
  $("room-online").classList.toggle("away", !room.joined);
  $("room-names").textContent = room.names.join(", ");
  $("message").placeholder = `Message #${room.name}`;
}

function renderLines() {
  const room = state.rooms.get(state.active);
  $("messages").replaceChildren(...(room ? room.lines.map(lineItem) : []));
  scrollDown();
}

function addLine(room, line) {
  room.lines.push(line);
  if (room.lines.length > MAX_LINES) room.lines.shift();
  if (room.name === state.active) {
    $("messages").append(lineItem(line));
    if ($("messages").children.length > MAX_LINES) $("messages").firstElementChild.remove();
    scrollDown();
  } else if (line.kind === "chat") {
    room.unread += 1;
    renderRooms();
  }
}

function lineItem(line) {
  if (line.kind === "notice") return el("li", { className: "line notice" }, line.text);
  const at = new Date(line.at);
  return el(
    "li",
    { className: line.from === state.name ? "line chat mine" : "line chat" },
    el("span", { className: "from", style: { "--hue": hue(line.from) } }, line.from),
    el(
      "time",
      { dateTime: at.toISOString() },
      at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
    ),
    el("p", { className: "text" }, line.text),
  );
}

function renderTyping() {
  const room = state.rooms.get(state.active);
  const who = room ? [...room.typing.keys()] : [];
  let text = "";
  if (who.length === 1) text = `${who[0]} is typing…`;
  else if (who.length === 2) text = `${who[0]} and ${who[1]} are typing…`;
  else if (who.length > 2) text = `${who.length} people are typing…`;
  $("typing").textContent = text;
}

function stopTyping(room, who) {
  if (!room.typing.has(who)) return;
  clearTimeout(room.typing.get(who));
  room.typing.delete(who);
  if (room.name === state.active) renderTyping();
}

function clearTyping(room) {
  for (const who of [...room.typing.keys()]) stopTyping(room, who);
}

function scrollDown() {
  $("messages").scrollTop = $("messages").scrollHeight;
}

function hue(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) % 360;
  return String(h);
}

function errorText(err) {
  return err instanceof Error ? err.message : String(err);
}

// -- wiring ---------------------------------------------------------------------------

function onSubmit(formId, errorId, action) {
  const form = $(formId);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    $(errorId).textContent = "";
    try {
      await action(form);
    } catch (err) {
      $(errorId).textContent = errorText(err);
    }
  });
}

function start() {
  // The name of the last visit, unless the user typed one while this file was loading.
  $("name").value ||= localStorage.getItem(NAME_KEY) || "";

  const enterButton = $("login-form").querySelector("button");
  onSubmit("login-form", "login-error", async () => {
    enterButton.disabled = true;
    try {
      await enter($("name").value.trim());
    } finally {
      enterButton.disabled = false;
    }
  });
  onSubmit("join-form", "join-error", async () => {
    await joinRoom($("room-name").value.trim());
    $("room-name").value = "";
  });
  onSubmit("send-form", "send-error", async () => {
    await say($("message").value);
    $("message").value = "";
    state.typingSentAt = 0;
  });

  $("message").addEventListener("input", typed);
  $("rooms").addEventListener("click", (event) => {
    const item = event.target.closest("li[data-room]");
    if (item) show(item.dataset.room);
  });
  $("leave").addEventListener("click", async () => {
    $("send-error").textContent = "";
    try {
      await leaveRoom(state.active);
    } catch (err) {
      $("send-error").textContent = errorText(err);
    }
  });

  // index.html disables the button until now: without this file's handlers, pressing it
  // would submit the form the browser's way, reloading the page and losing the name.
  enterButton.disabled = false;
}

start();
