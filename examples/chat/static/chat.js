// The chat page. neffos.js (loaded from the CDN by index.html; it sets window.neffos)
// talks to the wsmvc controller at /chat; this file keeps a little state and draws it.
//
// neffos.js calls the handlers in `events` with (nsConn, message). They must return
// nothing: neffos.js takes a returned value for an error.
//
// Reconnecting: with the `reconnect` dial option, neffos.js waits for the server to come
// back, dials again, connects the namespace and joins the rooms it was in, all by itself.
// It does so on a new connection object, and it does not tell the page any other way
// than through the events below: the page takes the new NSConn from _OnNamespaceConnected,
// marks its rooms joined again in _OnRoomJoined, and the server's OnPresence messages
// bring the online counts up to date.
//
// One more thing the page must do: neffos.js (0.1.34) rejoins all the rooms at once, and
// it names each request after performance.now(), which browsers round to 0.1 ms. Two
// requests made in the same tenth of a millisecond get the same name, and one of them
// never completes: that room would stay "reconnecting…" on the page although the server
// has joined it. oneJoinAtATime makes the joins of a connection wait for each other.

const NAMESPACE = "chat";
const ENDPOINT = "/chat"; // neffos.js makes it ws://<this host>/chat (wss:// over https)
const FIRST_ROOM = "lobby";
const RECONNECT_EVERY_MS = 1000;
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
  ns: null, // the namespace connection; neffos.js makes a new one on every reconnect
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
    oneJoinAtATime(ns); // before neffos.js rejoins the rooms with it
    state.ns = ns;
    if (ns.conn.wasReconnected()) {
      // A restarted server counts revisions from 1 again.
      for (const room of state.rooms.values()) room.rev = 0;
    }
    setStatus("online");
  },

  _OnNamespaceDisconnect(ns) {
    if (ns !== state.ns) return;
    state.ns = null;
    setStatus("reconnecting");
  },

  _OnRoomJoined(ns, msg) {
    const room = state.rooms.get(msg.Room);
    if (!room) return;
    room.joined = true;
    render();
  },

  _OnRoomLeft(ns, msg) {
    // Forced: the connection is gone. neffos.js joins the room again once it is back.
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
    render();
  },
};

function oneJoinAtATime(ns) {
  const joinRoom = ns.joinRoom.bind(ns);
  let previous = Promise.resolve();
  ns.joinRoom = (name) => {
    const joined = previous.then(() => joinRoom(name));
    previous = joined.catch(() => {});
    return joined;
  };
}

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
    conn = await neffos.dial(
      ENDPOINT,
      { [NAMESPACE]: events },
      { headers: { "X-Name": name }, reconnect: RECONNECT_EVERY_MS },
    );
  } catch (err) {
    setStatus("offline");
    throw err;
  }
  try {
    await conn.connect(NAMESPACE); // the server checks the name here
  } catch (err) {
    conn.close(); // closed by us: neffos.js will not redial it
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
  if (!state.ns) throw new Error("not connected, wait a moment");
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
  const joined = state.ns && state.ns.room(name);
  if (!joined) throw new Error("not connected, wait a moment");
  const err = await joined.leave(); // resolves with the error instead of rejecting
  if (err) throw err;
  const room = state.rooms.get(name);
  clearTyping(room);
  state.rooms.delete(name);
  const next = state.rooms.keys().next();
  show(next.done ? "" : next.value);
}

async function say(text) {
  const room = state.rooms.get(state.active);
  if (!state.ns || !room || !room.joined) throw new Error("not connected, wait a moment");
  // NSConn.ask has no room argument: ask with a message that carries the room.
  const msg = new neffos.Message();
  msg.Namespace = NAMESPACE;
  msg.Room = room.name;
  msg.Event = "OnSay";
  msg.Body = text;
  await state.ns.conn.ask(msg); // rejects with the server's error text
}

function typed() {
  const room = state.ns && state.ns.room(state.active);
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
  if (err instanceof Error) return err.message;
  if (err instanceof Event) return "cannot reach the server";
  return String(err);
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
  if (!window.neffos) {
    $("login-error").textContent = "neffos.js did not load: is cdn.jsdelivr.net reachable?";
    return;
  }
  $("name").value = localStorage.getItem(NAME_KEY) || "";

  onSubmit("login-form", "login-error", async (form) => {
    form.querySelector("button").disabled = true;
    try {
      await enter($("name").value.trim());
    } finally {
      form.querySelector("button").disabled = false;
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
}

start();
