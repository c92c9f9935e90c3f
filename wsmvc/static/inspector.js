// The wsmvc inspector page (wsmvc/inspector.py, docs/inspector.md).
//
// It dials the inspector's own websocket endpoint (./ws, next to this file) with the
// wsmvc.js client that endpoint serves, connects the namespace "_wsmvcInspector" and
// renders every "snapshot" the server pushes (one a second by default). It asks "filter"
// (the text of the filter box) and "disconnect" (a connection id). Every name shown comes
// from clients of the application, so the page only ever sets text, never HTML.

import { dial } from './ws/wsmvc.js';

const NAMESPACE = '_wsmvcInspector';
const FILTER_DELAY_MS = 250;
const TOAST_MS = 4000;

const page = { ns: null, filter: '', rows: new Map(), toastTimer: 0 };

const $ = (selector) => document.querySelector(selector);

/** An element with attributes and children (strings become text nodes). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === 'class') {
      node.className = value;
    } else {
      node.setAttribute(name, value);
    }
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child);
    }
  }
  return node;
}

const integer = (n) => Number(n).toLocaleString('en-US');
const rate = (n) => (n >= 100 ? Math.round(n).toLocaleString('en-US') : Number(n).toFixed(1));
const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString('en-GB');

function setStatus(state, text) {
  const status = $('#status');
  status.dataset.state = state;
  status.textContent = text;
}

function toast(text, error = false) {
  const box = $('#toast');
  box.textContent = text;
  box.classList.toggle('error', error);
  box.hidden = false;
  clearTimeout(page.toastTimer);
  page.toastTimer = setTimeout(() => { box.hidden = true; }, TOAST_MS);
}

function endpoint() {
  const url = new URL('./ws', import.meta.url);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

// -- rendering a snapshot -------------------------------------------------------------

function render(snapshot) {
  const { totals, namespaces, rooms, rates, errors, connections } = snapshot;
  $('#sum-connections').textContent = integer(totals.connections);
  $('#sum-namespaces').textContent = integer(namespaces.total);
  $('#sum-rooms').textContent = integer(rooms.total);
  $('#sum-in').textContent = rate(rates.in);
  $('#sum-out').textContent = rate(rates.out);
  $('#sum-errors').textContent = integer(errors.length);
  $('#sum-errors').classList.toggle('has-errors', errors.length > 0);
  renderConnections(connections);
  renderNamespaces(namespaces, rates.namespaces);
  renderRooms(rooms);
  renderErrors(errors);
  const pages = snapshot.pages === 1 ? '1 inspector page' : `${snapshot.pages} inspector pages`;
  $('#updated').textContent = `Updated ${clock(snapshot.time)} · every ${snapshot.interval} s · ${pages} open · `
    + `${integer(totals.in)} messages in, ${integer(totals.out)} out, `
    + `${integer(totals.errorAnswers)} error answers since the server started`;
  setStatus('live', `live · ${clock(snapshot.time)}`);
}

function renderConnections(connections) {
  const body = $('#connections tbody');
  const seen = new Set();
  const rows = [];
  for (const item of connections.items) {
    let key = item.id;
    for (let n = 2; seen.has(key); n++) {
      key = `${item.id}#${n}`; // ids need not be unique
    }
    seen.add(key);
    let row = page.rows.get(key);
    if (row === undefined) {
      row = connectionRow(item.id);
      page.rows.set(key, row);
    }
    fillConnection(row, item);
    rows.push(row);
  }
  for (const [key, row] of page.rows) {
    if (!seen.has(key)) {
      row.remove();
      page.rows.delete(key);
    }
  }
  if (rows.length === 0) {
    const text = connections.filter ? 'No connection matches the filter.' : 'No connections.';
    body.replaceChildren(el('tr', {}, el('td', { class: 'empty', colspan: '6' }, text)));
  } else if (rows.length !== body.children.length || rows.some((row, i) => body.children[i] !== row)) {
    body.replaceChildren(...rows); // only when the list changed: a focused button keeps its focus
  }
  const shown = connections.items.length;
  let note = `Showing ${integer(shown)} of ${integer(connections.total)} connections`;
  if (connections.filter) {
    note += `, ${integer(connections.matched)} matching “${connections.filter}”`;
  }
  $('#connections-note').textContent = `${note}. In and out: messages since this page opened.`;
}

function connectionRow(id) {
  const button = el('button', { class: 'disconnect', type: 'button' }, 'Disconnect');
  button.addEventListener('click', () => disconnect(id, button));
  const row = el('tr', { 'data-id': id },
    el('td', { class: 'id' }, id),
    el('td', { class: 'address' }),
    el('td', { class: 'namespaces' }),
    el('td', { class: 'num in' }),
    el('td', { class: 'num out' }),
    el('td', {}, button));
  return row;
}

function fillConnection(row, item) {
  row.querySelector('.id').title = item.userAgent;
  row.querySelector('.address').textContent = item.address;
  row.querySelector('.in').textContent = integer(item.in);
  row.querySelector('.out').textContent = integer(item.out);
  const chips = item.namespaces.map((ns) => el('span', { class: 'ns', 'data-namespace': ns.name },
    el('span', { class: 'ns-name' }, ns.name || '""'),
    ...ns.rooms.map((room) => el('span', { class: 'room', 'data-room': room }, room)),
    ns.roomCount > ns.rooms.length ? el('span', { class: 'more' }, `+${ns.roomCount - ns.rooms.length} rooms`) : null));
  if (item.namespaceCount > item.namespaces.length) {
    chips.push(el('span', { class: 'more' }, `+${item.namespaceCount - item.namespaces.length} namespaces`));
  }
  row.querySelector('.namespaces').replaceChildren(...chips);
}

function renderNamespaces(namespaces, rates) {
  const rows = namespaces.items.map((ns) => {
    const r = rates[ns.name] ?? { in: 0, out: 0 };
    return el('tr', { 'data-namespace': ns.name },
      el('td', { class: 'id' }, ns.name || '""'),
      el('td', { class: 'num' }, integer(ns.connections)),
      el('td', { class: 'num' }, integer(ns.rooms)),
      el('td', { class: 'num' }, rate(r.in)),
      el('td', { class: 'num' }, rate(r.out)));
  });
  fill('#namespaces tbody', rows, 5, 'No namespace has a connection.');
  $('#namespaces-note').textContent = namespaces.items.length < namespaces.total
    ? `Showing ${namespaces.items.length} of ${integer(namespaces.total)} namespaces.` : '';
}

function renderRooms(rooms) {
  const rows = rooms.items.map((room) => {
    const ids = room.members.join(', ');
    const more = room.count > room.members.length ? ` …and ${integer(room.count - room.members.length)} more` : '';
    return el('tr', { 'data-room': `${room.namespace}/${room.name}` },
      el('td', { class: 'id' }, room.namespace || '""'),
      el('td', { class: 'id' }, room.name),
      el('td', { class: 'num' }, integer(room.count)),
      el('td', { class: 'id members' }, ids + more));
  });
  fill('#rooms tbody', rows, 4, 'No rooms.');
  $('#rooms-note').textContent = rooms.items.length < rooms.total
    ? `Showing the ${rooms.items.length} largest of ${integer(rooms.total)} rooms.` : '';
}

function renderErrors(errors) {
  const items = errors.map((error) => el('li', {},
    el('div', {},
      el('span', { class: 'type' }, error.type), ' ',
      el('span', { class: 'where' },
        `${clock(error.time)} · ${error.namespace || '""'}${error.room ? ` / ${error.room}` : ''} · ${error.event} · connection ${error.id}`)),
    el('div', { class: 'text' }, error.text)));
  if (items.length === 0) {
    items.push(el('li', { class: 'empty' }, 'No handler raised an exception lately.'));
  }
  $('#errors').replaceChildren(...items);
  $('#errors-note').textContent = 'The last exceptions handlers raised (the server logs them with their tracebacks).';
}

function fill(selector, rows, columns, empty) {
  const body = $(selector);
  if (rows.length === 0) {
    body.replaceChildren(el('tr', {}, el('td', { class: 'empty', colspan: String(columns) }, empty)));
  } else {
    body.replaceChildren(...rows);
  }
}

// -- requests -------------------------------------------------------------------------

async function disconnect(id, button) {
  if (page.ns === null) {
    return;
  }
  button.disabled = true;
  button.textContent = 'Disconnecting…';
  try {
    await page.ns.ask('disconnect', id);
    toast(`Disconnected ${id}.`);
  } catch (err) {
    toast(`Could not disconnect ${id}: ${err.message}`, true);
    button.disabled = false;
    button.textContent = 'Disconnect';
  }
}

function sendFilter() {
  if (page.ns === null) {
    return;
  }
  page.ns.ask('filter', page.filter).catch((err) => toast(`Filter: ${err.message}`, true));
}

let filterTimer = 0;
$('#filter').addEventListener('input', (event) => {
  page.filter = event.target.value.trim();
  clearTimeout(filterTimer);
  filterTimer = setTimeout(sendFilter, FILTER_DELAY_MS);
});

// -- the connection -------------------------------------------------------------------

async function start() {
  setStatus('connecting', 'connecting…');
  try {
    const conn = await dial(endpoint(), {
      [NAMESPACE]: { snapshot: (ns, msg) => render(msg.unmarshal()) },
    }, {
      onLost: () => setStatus('lost', 'reconnecting…'),
      onRestored: () => {
        setStatus('live', 'live');
        sendFilter();
      },
      onClosed: (c, info) => setStatus('closed', `closed${info.reason ? `: ${info.reason}` : ''}`),
      onError: (err) => toast(`Error: ${err.message ?? err}`, true),
    });
    page.ns = await conn.connect(NAMESPACE);
    if (page.filter) {
      sendFilter();
    }
  } catch (err) {
    setStatus('closed', `cannot connect: ${err.message}`);
  }
}

start();
