'use strict';
// The scenarios. Each one quiesces the load before it calls `mark(name)` (no request in
// flight), so the CPU and memory snapshots the runner takes at a mark cover exactly the work
// counted between two marks. Times are in milliseconds (performance.now), rates per second.
// `cfg.urls` lists every server process of the setup (`cfg.url` is the first): broadcast
// receivers are spread over them in turn, the sender stays on the first.

const { performance } = require('perf_hooks');
const { makeClient } = require('./clients');

const NAMESPACE = 'default';

const BODY_SIZE = 64;
const BODY = 'b'.repeat(BODY_SIZE);
const DIAL_CONCURRENCY = 64;
const FANOUT_TIMEOUT_MS = 10000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function latencySummary(latencies) {
  const sorted = Float64Array.from(latencies).sort();
  return { p50_ms: percentile(sorted, 50), p99_ms: percentile(sorted, 99) };
}

// Open `count` clients, at most `cfg.dialConcurrency` (default DIAL_CONCURRENCY) handshakes in
// flight at a time; the set-up time of each one is pushed to `latencies` when given. Client i
// dials `urlOf(i)` (default: `cfg.url`) and connects `namespace` (null: the handshake only).
async function openClients(cfg, count, { latencies = null, urlOf = null, namespace } = {}) {
  const clients = new Array(count);
  let next = 0;
  async function worker() {
    while (next < count) {
      const i = next++;
      const t0 = performance.now();
      const url = urlOf === null ? cfg.url : urlOf(i);
      clients[i] = await makeClient(cfg.proto, url, cfg.deflate).open(namespace);
      if (latencies !== null) latencies.push(performance.now() - t0);
    }
  }
  const dialers = Math.min(cfg.dialConcurrency || DIAL_CONCURRENCY, count);
  await Promise.all(Array.from({ length: dialers }, worker));
  return clients;
}

// Run `step()` in `workers` parallel closed loops for `ms` milliseconds, then wait for the loops
// to finish their last step. Returns the elapsed time, first step to last completion.
async function closedLoops(workers, ms, step) {
  let running = true;
  const t0 = performance.now();
  const loops = workers.map(async (worker) => {
    while (running) await step(worker);
  });
  await sleep(ms);
  running = false;
  await Promise.all(loops);
  return performance.now() - t0;
}

async function echo(cfg, mark) {
  const clients = await openClients(cfg, cfg.conns);
  const latencies = [];
  let errors = 0;
  let record = false;
  const ask = async (client) => {
    const t0 = performance.now();
    const reply = await client.ask(BODY);
    if (record) latencies.push(performance.now() - t0);
    if (reply !== BODY) errors++;
  };
  await closedLoops(clients, cfg.warmup * 1000, ask);
  await mark('start');
  record = true;
  const elapsed = await closedLoops(clients, cfg.duration * 1000, ask);
  await mark('stop');
  return {
    ops: latencies.length,
    elapsed_s: elapsed / 1000,
    rate: latencies.length / (elapsed / 1000),
    errors,
    ...latencySummary(latencies),
  };
}

// Ask every server process `probe` through one of its receivers: a server with an exchange
// answers once its broker has the subscriptions of every connection that arrived before.
async function probeServers(urls, receivers) {
  for (let u = 0; u < urls.length && u < receivers.length; u++) {
    const reply = await receivers[u].ask(BODY, 'probe'); // receivers[u] is on urls[u]
    if (reply !== BODY) throw new Error(`probe of ${urls[u]}: ${reply}`);
  }
}

// Broadcast body `seq` of `size` bytes: the number, then (for large bodies) chat-like JSON
// text, which deflate shrinks about as much as real traffic.
const FILLER = ',{"user":"user42","text":"see you in the room at nine","ts":1764540000}';
function bodyOf(seq, size) {
  const head = String(seq).padStart(Math.min(size, BODY_SIZE), '0');
  if (size <= head.length) return head;
  return (head + FILLER.repeat(Math.ceil((size - head.length) / FILLER.length))).slice(0, size);
}

async function broadcast(cfg, mark) {
  const urls = cfg.urls || [cfg.url];
  const receivers = await openClients(cfg, cfg.receivers, { urlOf: (i) => urls[i % urls.length] });
  const [sender] = await openClients(cfg, 1);
  if (cfg.probe) await probeServers(urls, receivers);
  const latencies = [];
  let errors = 0;
  let record = false;
  let seq = 0;
  let expected = '';
  let remaining = 0;
  let done = null;
  for (const receiver of receivers) {
    receiver.onChat = (body) => {
      if (body !== expected) errors++;
      if (--remaining === 0) done();
    };
  }
  sender.onChat = () => errors++; // the sender is excluded from its own broadcast
  // One fan-out in flight: send the trigger, wait until the last receiver has the message.
  const fanout = () =>
    new Promise((resolve, reject) => {
      expected = bodyOf(++seq, cfg.bodyBytes || BODY_SIZE);
      remaining = receivers.length;
      const timer = setTimeout(() => {
        reject(new Error(`fan-out ${seq}: ${remaining} receivers still waiting`));
      }, FANOUT_TIMEOUT_MS);
      const t0 = performance.now();
      done = () => {
        clearTimeout(timer);
        if (record) latencies.push(performance.now() - t0);
        resolve();
      };
      sender.fanout(expected);
    });
  await closedLoops([sender], cfg.warmup * 1000, fanout);
  await mark('start');
  record = true;
  const elapsed = await closedLoops([sender], cfg.duration * 1000, fanout);
  await mark('stop');
  const deliveries = latencies.length * receivers.length;
  return {
    ops: deliveries,
    fanouts: latencies.length,
    elapsed_s: elapsed / 1000,
    rate: deliveries / (elapsed / 1000),
    errors,
    ...latencySummary(latencies),
  };
}

async function connect(cfg, mark) {
  // Warm the server's connection path (lazy imports, first allocations), then let it settle.
  for (const client of await openClients(cfg, cfg.warmConns)) client.close();
  await sleep(500);
  await mark('start');
  const latencies = [];
  const t0 = performance.now();
  const clients = await openClients(cfg, cfg.conns, { latencies });
  const elapsed = performance.now() - t0;
  await mark('connected');
  await sleep(cfg.settleMs); // idle connections: what stays in memory, and any trailing work
  await mark('stop');
  return {
    ops: clients.length,
    elapsed_s: elapsed / 1000,
    rate: clients.length / (elapsed / 1000),
    errors: 0,
    ...latencySummary(latencies),
  };
}

// Namespace connects, A/B: one group of `cfg.conns` websockets (the handshake only) per server
// of `cfg.urls`, each websocket connecting and disconnecting `cfg.namespace` in a closed loop.
// The servers take turns in slices of `cfg.duration / cfg.slices` seconds (ABBA order, so each
// is as often first as second), only one loaded at a time, with a mark after every slice: the
// two are measured side by side, seconds apart, whatever the host does meanwhile. One operation
// is one connect + disconnect; its latency covers both round trips. A refused connect or
// disconnect counts as an error.
// With `cfg.closeConns` the groups are `cfg.conns` workers instead, each in a closed loop of
// opening a websocket (the upgrade, `M` -> `A<id>`), connecting `cfg.namespace` and closing
// the websocket, waiting until it is closed: the server ends the connection (and its
// connection-scoped objects) once per namespace connect. One operation is one such
// connection; its latency covers all of it. The load rests `cfg.settleMs` before each mark,
// so what a server does after a close is counted in its own turn. A refused handshake or
// connect fails the run.
async function namespaceConnect(cfg, mark) {
  const urls = cfg.urls || [cfg.url];
  const closing = Boolean(cfg.closeConns);
  const groups = [];
  for (const url of urls) {
    groups.push(
      closing
        ? Array.from({ length: cfg.conns }, () => url)
        : await openClients(cfg, cfg.conns, { urlOf: () => url, namespace: null }),
    );
  }
  const stats = urls.map(() => ({ ops: 0, elapsed: 0, errors: 0, latencies: [] }));
  let record = false;
  const cycleFor = (stat) => async (client) => {
    const t0 = performance.now();
    const connected = await client.connectNamespace(cfg.namespace);
    const disconnected = await client.disconnectNamespace(cfg.namespace);
    if (!record) return;
    stat.latencies.push(performance.now() - t0);
    if (!connected || !disconnected) stat.errors++;
  };
  const connectionFor = (stat) => async (url) => {
    const t0 = performance.now();
    const client = await makeClient(cfg.proto, url, cfg.deflate).open(cfg.namespace);
    await client.closeAndWait();
    if (record) stat.latencies.push(performance.now() - t0);
  };
  const loopFor = closing ? connectionFor : cycleFor;
  const settle = () => (closing && cfg.settleMs ? sleep(cfg.settleMs) : null);
  for (let t = 0; t < urls.length; t++) {
    await closedLoops(groups[t], cfg.warmup * 1000, loopFor(stats[t]));
  }
  await settle();
  const slices = [];
  let previous = 'start';
  await mark(previous);
  record = true;
  const sliceMs = (cfg.duration * 1000) / cfg.slices;
  for (let k = 0; k < cfg.slices; k++) {
    const order = urls.map((_, t) => t);
    if (k % 2 === 1) order.reverse();
    for (const t of order) {
      const stat = stats[t];
      const before = stat.latencies.length;
      stat.elapsed += await closedLoops(groups[t], sliceMs, loopFor(stat));
      await settle();
      const name = `slice ${k} ${t}`;
      await mark(name);
      slices.push({ target: t, from: previous, to: name, ops: stat.latencies.length - before });
      previous = name;
    }
  }
  return {
    targets: stats.map((stat) => ({
      ops: stat.latencies.length,
      elapsed_s: stat.elapsed / 1000,
      rate: stat.latencies.length / (stat.elapsed / 1000),
      errors: stat.errors,
      ...latencySummary(stat.latencies),
    })),
    slices,
  };
}

// Room joins, the presence's load: `cfg.conns` clients in `default`, spread over `cfg.urls` in
// turn, each in a closed loop of join room + leave room (one room of ROOMS per client), each
// waiting for its empty reply. One operation is one join + leave; its latency covers both
// round trips. A refused join or leave counts as an error. With `cfg.convergeSamples`, after
// the last mark: how long until the last server's presence sees a join made on the first.
const ROOMS = 16;

async function roomJoin(cfg, mark) {
  const urls = cfg.urls || [cfg.url];
  const clients = await openClients(cfg, cfg.conns, { urlOf: (i) => urls[i % urls.length] });
  clients.forEach((client, i) => {
    client.room = `room${i % ROOMS}`;
  });
  if (cfg.probe) await probeServers(urls, clients);
  const latencies = [];
  let errors = 0;
  let record = false;
  const cycle = async (client) => {
    const t0 = performance.now();
    const joined = await client.joinRoom(client.room);
    const left = await client.leaveRoom(client.room);
    if (!record) return;
    latencies.push(performance.now() - t0);
    if (!joined || !left) errors++;
  };
  await closedLoops(clients, cfg.warmup * 1000, cycle);
  await mark('start');
  record = true;
  const elapsed = await closedLoops(clients, cfg.duration * 1000, cycle);
  await mark('stop');
  const out = {
    ops: latencies.length,
    elapsed_s: elapsed / 1000,
    rate: latencies.length / (elapsed / 1000),
    errors,
    ...latencySummary(latencies),
  };
  if (cfg.convergeSamples) {
    const converge = await convergence(cfg, urls);
    out.errors += converge.errors;
    out.converge_p50_ms = converge.p50_ms;
    out.converge_p99_ms = converge.p99_ms;
  }
  return out;
}

// Presence convergence, measured alone (one join in flight, no other load): a joiner on the
// first server joins room `watch<k>`; a watcher on the last server has asked it `watch`, so
// that server tells it of every presence change of a `watch*` room as its replica applies
// it, with the room's cluster-wide count (`joined:watch<k>:1`). The latency is from the
// join leaving the client to that notice arriving; then the joiner leaves and the watcher
// waits for `left:watch<k>:0`. With one server (in-process) both are on it.
async function convergence(cfg, urls) {
  const joiner = await makeClient(cfg.proto, urls[0]).open();
  const watcher = await makeClient(cfg.proto, urls[urls.length - 1]).open();
  let errors = 0;
  let expected = null;
  let seen = null;
  watcher.onChat = (body) => {
    if (body !== expected) {
      errors++;
      return;
    }
    expected = null;
    seen(performance.now());
  };
  const notice = (body) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no presence notice ${body}`)), 10000);
      expected = body;
      seen = (t) => {
        clearTimeout(timer);
        resolve(t);
      };
    });
  if ((await watcher.ask(BODY, 'watch')) !== BODY) throw new Error('watch refused');
  const latencies = [];
  for (let k = 0; k < cfg.convergeSamples; k++) {
    const room = `watch${k}`;
    const joinSeen = notice(`joined:${room}:1`);
    const t0 = performance.now();
    if (!(await joiner.joinRoom(room))) errors++;
    latencies.push((await joinSeen) - t0);
    const leaveSeen = notice(`left:${room}:0`);
    if (!(await joiner.leaveRoom(room))) errors++;
    await leaveSeen;
  }
  joiner.close();
  watcher.close();
  return { errors, ...latencySummary(latencies) };
}

// Connection set-ups, a closed loop: `cfg.conns` workers, each opening a connection (the
// upgrade, `M` -> `A<id>`, and the namespace connect unless `cfg.namespace` is null) to the
// next server of `cfg.urls` in turn, then closing it and waiting until the socket is
// closed. One operation is one connection, opened and closed; the latency is the opening.
// One idle connection per server stays in `default` throughout, so the namespace never
// empties on a server (its channel is not unsubscribed and subscribed again). After the
// warm-up and after the measured loops the load rests `cfg.settleMs`: work a server defers
// past a close is counted with the connections that caused it.
async function connectCycles(cfg, mark) {
  const urls = cfg.urls || [cfg.url];
  const anchors = await openClients(cfg, urls.length, { urlOf: (i) => urls[i] });
  if (cfg.probe) await probeServers(urls, anchors);
  const namespace = cfg.namespace === undefined ? NAMESPACE : cfg.namespace;
  const latencies = [];
  let record = false;
  let next = 0;
  const cycle = async () => {
    const url = urls[next++ % urls.length];
    const t0 = performance.now();
    const client = await makeClient(cfg.proto, url, cfg.deflate).open(namespace);
    if (record) latencies.push(performance.now() - t0);
    await client.closeAndWait();
  };
  const workers = Array.from({ length: cfg.conns }, (_, i) => i);
  await closedLoops(workers, cfg.warmup * 1000, cycle);
  await sleep(cfg.settleMs);
  await mark('start');
  record = true;
  const elapsed = await closedLoops(workers, cfg.duration * 1000, cycle);
  await sleep(cfg.settleMs);
  await mark('stop');
  for (const anchor of anchors) anchor.close();
  return {
    ops: latencies.length,
    elapsed_s: elapsed / 1000,
    rate: latencies.length / (elapsed / 1000),
    errors: 0,
    ...latencySummary(latencies),
  };
}

module.exports = {
  echo,
  broadcast,
  connect,
  'di-connect': namespaceConnect,
  'exchange-broadcast': broadcast,
  'exchange-join': roomJoin,
  'exchange-connect': connectCycles,
};
