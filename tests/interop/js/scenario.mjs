// Drives the real neffos.js client (npm neffos.js@0.1.34, on the `ws` package) against a
// neffos server and reports what the client code sees, one JSON object per stdout line:
//
//     node js/scenario.mjs <scenario> <ws-url> [args...]
//
// Every line is {"step": <name>, ...values}; step names are unique within a scenario.
// The script only reports: the pytest side (tests/interop/test_neffos_js.py) asserts.
// Exit status: 0 when the scenario ran to its end; 1 on an exception, including a reply or
// event that did not come within its timeout (neffos.js itself never times out); 3 when
// the whole scenario overran its watchdog; 64 for a usage error.
//
// neffos.js in Node imports `ws` itself (dist/neffos.js: `await import('ws')`) and calls
// `new WebSocket(endpoint, options)` with the dial options, so ws client options such as
// `perMessageDeflate` go straight through `neffos.dial(url, handlers, options)`.

import * as neffos from 'neffos.js';

const WAIT_MS = 5000; // one awaited reply or pushed event
const RECONNECT_WAIT_MS = 20000; // the reconnect scenario waits for a server restart
const WATCHDOG_MS = 40000; // the whole scenario

function report(step, fields = {}) {
    process.stdout.write(JSON.stringify({ step, ...fields }) + '\n');
}

class Timeout extends Error {}

// Resolve with `promise`, or reject with a Timeout when it takes longer than `ms`.
function within(promise, what, ms = WAIT_MS) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Timeout(`timed out after ${ms} ms: ${what}`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// What a settled promise gave the caller: {resolved: value} or {rejected: error text}.
async function outcome(promise, what) {
    try {
        return { resolved: describe(await within(promise, what)) };
    } catch (err) {
        if (err instanceof Timeout) {
            throw err;
        }
        return { rejected: errorText(err) };
    }
}

function errorText(err) {
    if (err instanceof Error) {
        return err.message;
    }
    return String(err);
}

// A JSON-friendly view of a message body or a returned value.
function describe(value) {
    if (value === undefined || value === null) {
        return null;
    }
    if (value instanceof ArrayBuffer) {
        return { ArrayBuffer: Array.from(new Uint8Array(value)) };
    }
    if (value instanceof Error) {
        return { Error: value.message };
    }
    if (value instanceof neffos.Message) {
        return messageView(value);
    }
    if (value instanceof neffos.Room) {
        return { Room: value.name };
    }
    if (value instanceof neffos.NSConn) {
        return { NSConn: value.namespace };
    }
    return value;
}

function messageView(msg) {
    return {
        event: msg.Event,
        namespace: msg.Namespace,
        room: msg.Room || '',
        body: describe(msg.Body),
        err: msg.Err ? errorText(msg.Err) : null,
        isLocal: Boolean(msg.IsLocal),
        isForced: Boolean(msg.IsForced),
        binary: Boolean(msg.SetBinary),
        token: msg.wait || '',
    };
}

// Events pushed to the client, in arrival order; `next(event)` waits for the next one.
class Inbox {
    constructor(timeoutMs = WAIT_MS) {
        this.timeoutMs = timeoutMs;
        this.items = [];
        this.history = [];
        this.waiters = [];
    }

    push(item) {
        this.items.push(item);
        this.history.push(item);
        const waiters = this.waiters;
        this.waiters = [];
        for (const wake of waiters) {
            wake();
        }
    }

    // The first not yet taken item whose event is `event` (and that matches `where`).
    async next(event, where = () => true) {
        const find = () => this.items.findIndex((m) => m.event === event && where(m));
        const search = new Promise((resolve) => {
            const look = () => {
                const i = find();
                if (i >= 0) {
                    resolve(this.items.splice(i, 1)[0]);
                } else {
                    this.waiters.push(look);
                }
            };
            look();
        });
        return within(search, `event ${event}`, this.timeoutMs);
    }

    // The items of `event` received so far and not taken by `next`, without waiting.
    all(event) {
        return this.items.filter((m) => m.event === event);
    }

    // Every item of `event` received so far, taken or not.
    seen(event) {
        return this.history.filter((m) => m.event === event);
    }
}

const SYSTEM_EVENTS = [
    neffos.OnNamespaceConnect,
    neffos.OnNamespaceConnected,
    neffos.OnNamespaceDisconnect,
    neffos.OnRoomJoin,
    neffos.OnRoomJoined,
    neffos.OnRoomLeave,
    neffos.OnRoomLeft,
];

// Handlers for `events` that record every call in `inbox` and return nothing (a handler
// that returns a value would answer the server, spec 7.2).
function recorder(inbox, events, extra = {}) {
    const handlers = {};
    for (const event of [...SYSTEM_EVENTS, ...events]) {
        handlers[event] = (nsConn, msg) => {
            inbox.push({ ...messageView(msg), nsConn });
        };
    }
    return { ...handlers, ...extra };
}

function view(item) {
    const { nsConn, ...rest } = item;
    return rest;
}

// The raw frames the websocket delivers to neffos.js from now on, as text (binary frames as
// {ArrayBuffer: bytes}). neffos.js handles each frame before this listener records it, so
// once an ask resolved, its answer frame is in the log.
class FrameLog {
    constructor(conn) {
        this.frames = [];
        conn.conn.addEventListener('message', (evt) => {
            this.frames.push(describe(evt.data));
        });
    }

    // The frames received since the last take.
    take() {
        return this.frames.splice(0);
    }
}

// Close a neffos.js connection and wait for the websocket's close event.
async function closeConn(conn) {
    const ws = conn.conn;
    if (ws.readyState === ws.CLOSED) {
        conn.close();
        return { code: null, wasClean: null };
    }
    const closed = new Promise((resolve) => {
        ws.addEventListener('close', (evt) => resolve({ code: evt.code, wasClean: evt.wasClean }));
    });
    conn.close();
    return within(closed, 'websocket close');
}

// --------------------------------------------------------------------------------------
// Scenarios
// --------------------------------------------------------------------------------------

const scenarios = {};

scenarios.handshake = async (url) => {
    const first = await within(neffos.dial(url, { default: {} }), 'first dial');
    const second = await within(neffos.dial(url, { default: {} }), 'second dial');
    report('dial', {
        first: first.ID ?? null,
        second: second.ID ?? null,
        acknowledged: first.isAcknowledged() && second.isAcknowledged(),
        wasReconnected: first.wasReconnected(),
    });
    await closeConn(first);
    await closeConn(second);
};

scenarios.connect = async (url) => {
    const inbox = new Inbox();
    const conn = await within(
        neffos.dial(url, {
            default: recorder(inbox, []),
            forbidden: recorder(inbox, []),
            notonserver: recorder(inbox, []),
        }),
        'dial',
    );
    const frames = new FrameLog(conn);
    const ok = await outcome(conn.connect('default'), 'connect default');
    const connected = await inbox.next(neffos.OnNamespaceConnected);
    report('default', {
        outcome: ok,
        connectedEvent: view(connected),
        connectedNamespaces: Array.from(conn.connectedNamespaces.keys()),
        frames: frames.take(),
    });
    report('forbidden', {
        outcome: await outcome(conn.connect('forbidden'), 'connect forbidden'),
        connected: conn.namespace('forbidden') !== undefined,
        frames: frames.take(),
    });
    report('notonserver', {
        outcome: await outcome(conn.connect('notonserver'), 'connect notonserver'),
        connected: conn.namespace('notonserver') !== undefined,
        frames: frames.take(),
    });
    // The refusals left the accepted namespace working.
    const ns = conn.namespace('default');
    report('after', {
        ask: describe((await within(ns.ask('ask', 'still here'), 'ask')).Body),
        connectedEvents: inbox.seen(neffos.OnNamespaceConnected).map((m) => m.namespace),
        connectedNamespaces: Array.from(conn.connectedNamespaces.keys()),
    });
    await closeConn(conn);
};

scenarios.chat = async (url, ...bodies) => {
    const inbox = new Inbox();
    const conn = await within(neffos.dial(url, { default: recorder(inbox, ['chat']) }), 'dial');
    const ns = await within(conn.connect('default'), 'connect');
    const echoes = [];
    for (const body of bodies) {
        const written = ns.emit('chat', body);
        const echo = await inbox.next('chat');
        echoes.push({ written, body: echo.body, room: echo.room, err: echo.err });
    }
    report('chat', { echoes });
    // A burst: every echo arrives, in order.
    const burst = Array.from({ length: 500 }, (_, i) => `burst ${i};`);
    for (const body of burst) {
        ns.emit('chat', body);
    }
    const received = [];
    for (let i = 0; i < burst.length; i++) {
        received.push((await inbox.next('chat')).body);
    }
    report('burst', { inOrder: received.every((b, i) => b === burst[i]), count: received.length });
    await closeConn(conn);
};

scenarios.rooms = async (url, ...roomNames) => {
    const inbox = new Inbox();
    const conn = await within(neffos.dial(url, { default: recorder(inbox, ['chat']) }), 'dial');
    const ns = await within(conn.connect('default'), 'connect');
    const frames = new FrameLog(conn);
    for (const name of roomNames) {
        const room = await within(ns.joinRoom(name), `join ${name}`);
        const joinFrames = frames.take();
        const join = await inbox.next(neffos.OnRoomJoin);
        const joined = await inbox.next(neffos.OnRoomJoined);
        const emitted = room.emit('chat', `to ${name}`);
        const echo = await inbox.next('chat');
        report(`joined ${name}`, {
            room: describe(room),
            joinEvent: view(join),
            joinedEvent: view(joined),
            lookup: describe(ns.room(name)),
            emitted,
            echo: { body: echo.body, room: echo.room },
            joinFrames,
            echoFrames: frames.take(),
        });
        const left = await within(room.leave(), `leave ${name}`);
        const leave = await inbox.next(neffos.OnRoomLeave);
        const leftEvent = await inbox.next(neffos.OnRoomLeft);
        report(`left ${name}`, {
            result: describe(left),
            leaveEvent: view(leave),
            leftEvent: view(leftEvent),
            lookup: describe(ns.room(name)),
            emitAfterLeave: room.emit('chat', 'too late'),
            leaveFrames: frames.take(),
        });
    }
    // Nothing was echoed for the emit after the leave: an ask is answered after it would be.
    await within(ns.ask('ask', 'sync'), 'ask');
    report('done', { strayChats: inbox.all('chat').map(view) });
    await closeConn(conn);
};

scenarios.ask = async (url, body) => {
    const conn = await within(neffos.dial(url, { default: {} }), 'dial');
    const ns = await within(conn.connect('default'), 'connect');
    report('ask', await outcome(ns.ask('ask', body), 'ask'));
    report('askerr', await outcome(ns.ask('askerr', body), 'askerr'));
    // An event the server has no handler for: wsmvc answers the ask with an error
    // (Go would leave it unanswered, and neffos.js asks have no timeout).
    report('unknown', await outcome(ns.ask('no such event', body), 'unknown event'));
    // Many asks in flight at once: each answer reaches the ask with its token.
    const many = Array.from({ length: 25 }, (_, i) => ns.ask('ask', `n${i}`));
    const answers = await within(Promise.all(many), 'concurrent asks');
    report('concurrent', { bodies: answers.map((m) => m.Body) });
    await closeConn(conn);
};

scenarios.server_ask = async (url, body) => {
    const inbox = new Inbox();
    const events = recorder(inbox, [], {
        question: (nsConn, msg) => {
            inbox.push(messageView(msg));
            if (msg.Body.startsWith('refuse')) {
                return new Error(`I will not answer ${msg.Body}`);
            }
            return neffos.reply(`answer to ${msg.Body}`);
        },
    });
    const conn = await within(neffos.dial(url, { default: events }), 'dial');
    const ns = await within(conn.connect('default'), 'connect');
    const frames = new FrameLog(conn);
    const result = await outcome(ns.ask('server_ask', body), 'server_ask');
    report('server_ask', {
        outcome: result,
        question: await inbox.next('question'),
        frames: frames.take(),
    });
    // The client's handler answers with an error: the server's ask fails with that text,
    // and so does the handler that asked.
    report('refused', await outcome(ns.ask('server_ask', 'refuse this'), 'refused server_ask'));
    // Several at once, and a plain ask behind them: the server handles one connection's
    // messages in order, each server_ask waiting for the client's answer (spec 8.5).
    const order = [];
    const asks = [0, 1, 2, 3].map((i) =>
        ns.ask('server_ask', `q${i}`).then((m) => {
            order.push(`server_ask q${i}`);
            return m.Body;
        }),
    );
    asks.push(
        ns.ask('ask', 'behind').then((m) => {
            order.push('ask');
            return m.Body;
        }),
    );
    report('concurrent', { bodies: await within(Promise.all(asks), 'concurrent'), order });
    await closeConn(conn);
};

scenarios.server_join_refused = async (url, roomName) => {
    const inbox = new Inbox();
    const events = recorder(inbox, ['chat'], {
        [neffos.OnRoomJoin]: (nsConn, msg) => {
            inbox.push(messageView(msg));
            return new Error(`no thanks, not ${msg.Room}`);
        },
    });
    const conn = await within(neffos.dial(url, { default: events }), 'dial');
    const ns = await within(conn.connect('default'), 'connect');
    const result = await outcome(ns.ask('server_join', roomName), 'server_join');
    report('server_join_refused', {
        outcome: result,
        joinEvent: view(await inbox.next(neffos.OnRoomJoin)),
        joinedEvents: inbox.all(neffos.OnRoomJoined).map(view),
        lookup: describe(ns.room(roomName)),
    });
    await closeConn(conn);
};

scenarios.server_join = async (url, roomName) => {
    const inbox = new Inbox();
    const conn = await within(neffos.dial(url, { default: recorder(inbox, ['chat']) }), 'dial');
    const ns = await within(conn.connect('default'), 'connect');
    const frames = new FrameLog(conn);
    const result = await outcome(ns.ask('server_join', roomName), 'server_join');
    const join = await inbox.next(neffos.OnRoomJoin);
    const joined = await inbox.next(neffos.OnRoomJoined);
    const room = ns.room(roomName);
    report('server_join', {
        outcome: result,
        joinEvent: view(join),
        joinedEvent: view(joined),
        lookup: describe(room),
        frames: frames.take(),
    });
    const emitted = room !== undefined && room.emit('chat', 'in the room the server chose');
    const echo = await inbox.next('chat');
    report('room_emit', { emitted, echo: { body: echo.body, room: echo.room } });
    await closeConn(conn);
};

scenarios.server_connect = async (url, namespace) => {
    const inbox = new Inbox();
    const handlers = { default: recorder(inbox, []) };
    handlers[namespace] = recorder(inbox, ['chat']);
    const conn = await within(neffos.dial(url, handlers), 'dial');
    const ns = await within(conn.connect('default'), 'connect');
    await inbox.next(neffos.OnNamespaceConnected, (m) => m.namespace === 'default');
    const result = await outcome(ns.ask('server_connect', namespace), 'server_connect');
    report('server_connect', {
        outcome: result,
        connected: conn.namespace(namespace) !== undefined,
        connectedEvents: inbox
            .seen(neffos.OnNamespaceConnected)
            .filter((m) => m.namespace === namespace)
            .map(view),
        connectedNamespaces: Array.from(conn.connectedNamespaces.keys()),
    });
    await closeConn(conn);
};

scenarios.binary = async (url, ...bytes) => {
    const inbox = new Inbox();
    const conn = await within(neffos.dial(url, { default: recorder(inbox, ['binary']) }), 'dial');
    const ns = await within(conn.connect('default'), 'connect');
    const frames = new FrameLog(conn);
    const body = Uint8Array.from(bytes.map(Number));
    const written = ns.emitBinary('binary', body);
    const answer = await inbox.next('binary');
    report('binary', { written, answer: view(answer), frames: frames.take() });
    // A binary ask (nsConn.ask has no binary form: a Message with SetBinary through
    // conn.ask): answered in a binary frame too (spec 2.8).
    const request = (event) => {
        const msg = new neffos.Message();
        msg.Namespace = 'default';
        msg.Event = event;
        msg.Body = body;
        msg.SetBinary = true;
        return conn.ask(msg);
    };
    report('binary_ask', await outcome(request('binary'), 'binary ask'));
    // An error answer to a binary message is binary as well, and neffos.js then builds the
    // error from the ArrayBuffer body: the JS code sees "[object ArrayBuffer]" (spec 2.4).
    report('binary_askerr', await outcome(request('askerr'), 'binary askerr'));
    await closeConn(conn);
};

// Three clients: the sender (deflate on) and two receivers, one with permessage-deflate
// and one without, so the server writes the same broadcast both ways.
scenarios.broadcast = async (url, body) => {
    const dial = async (name, perMessageDeflate) => {
        const inbox = new Inbox();
        const conn = await within(
            neffos.dial(url, { default: recorder(inbox, ['chat']) }, { perMessageDeflate }),
            `dial ${name}`,
        );
        const ns = await within(conn.connect('default'), `connect ${name}`);
        return { inbox, conn, ns };
    };
    const sender = await dial('sender', true);
    const plain = await dial('plain receiver', false);
    const deflate = await dial('deflate receiver', true);
    const written = sender.ns.emit('broadcast', body);
    const receivedPlain = await plain.inbox.next('chat');
    const receivedDeflate = await deflate.inbox.next('chat');
    // The sender is answered in order: once its ask is answered, a broadcast copy to it
    // would already have arrived.
    await within(sender.ns.ask('ask', 'sync'), 'sender ask');
    report('broadcast', {
        written,
        received: [view(receivedPlain), view(receivedDeflate)],
        extensions: [sender, plain, deflate].map((c) => c.conn.conn.extensions),
        senderChats: sender.inbox.all('chat').map(view),
        ids: [sender, plain, deflate].map((c) => c.conn.ID),
    });
    for (const c of [sender, plain, deflate]) {
        await closeConn(c.conn);
    }
};

scenarios.disconnect = async (url) => {
    const inbox = new Inbox();
    const conn = await within(neffos.dial(url, { default: recorder(inbox, ['chat']) }), 'dial');
    let ns = await within(conn.connect('default'), 'connect');
    await within(ns.joinRoom('before-disconnect'), 'join');
    const result = await outcome(ns.disconnect(), 'disconnect');
    const leftEvent = await inbox.next(neffos.OnRoomLeft);
    const disconnectEvent = await inbox.next(neffos.OnNamespaceDisconnect);
    report('disconnect', {
        outcome: result,
        roomLeftEvent: view(leftEvent),
        disconnectEvent: view(disconnectEvent),
        connected: conn.namespace('default') !== undefined,
        emitAfterDisconnect: ns.emit('chat', 'nobody listens'),
    });
    // The namespace can be connected again on the same connection.
    ns = await within(conn.connect('default'), 'connect again');
    report('reconnected_namespace', {
        ask: describe((await within(ns.ask('ask', 'again'), 'ask')).Body),
    });
    const closed = await closeConn(conn);
    const forced = await inbox.next(neffos.OnNamespaceDisconnect);
    report('close', {
        closed,
        isClosed: conn.isClosed(),
        forcedDisconnectEvent: view(forced),
        askAfterClose: await outcome(ns.ask('ask', 'closed'), 'ask after close'),
        emitAfterClose: ns.emit('chat', 'closed'),
    });
};

// What neffos.js sees when the server refuses it, kicks it out of a namespace during an
// ask, or closes right after three messages (issue 8, cases 4 and 5), with and without
// permessage-deflate.
scenarios.lifecycle = async (url, mode) => {
    const perMessageDeflate = mode === 'on';
    const refused = await outcome(
        neffos.dial(url, { default: {} }, { perMessageDeflate, headers: { 'X-Reject': 'not today' } }),
        'refused dial',
    );
    report('refused', { outcome: refused });

    const inbox = new Inbox();
    const conn = await within(
        neffos.dial(url, { default: recorder(inbox, ['chat']) }, { perMessageDeflate }),
        'dial',
    );
    const ns = await within(conn.connect('default'), 'connect');
    const kicked = await outcome(ns.ask('kick', 'out?'), 'ask kick');
    const disconnected = await inbox.next(neffos.OnNamespaceDisconnect);
    report('kick', {
        outcome: kicked,
        disconnectEvent: view(disconnected),
        connected: conn.namespace('default') !== undefined,
    });

    const again = await within(conn.connect('default'), 'connect again');
    const ws = conn.conn;
    const closed = new Promise((resolve) => {
        ws.addEventListener('close', (evt) => resolve({ code: evt.code, reason: evt.reason }));
    });
    const chatsBeforeClose = [];
    ws.addEventListener('close', () => {
        chatsBeforeClose.push(...inbox.all('chat').map((m) => m.body));
    });
    again.emit('three_then_close', '');
    report('three_then_close', {
        closed: await within(closed, 'close'),
        chatsBeforeClose,
        extensions: ws.extensions,
    });
};

scenarios.leave_all = async (url, ...roomNames) => {
    const inbox = new Inbox();
    const conn = await within(neffos.dial(url, { default: recorder(inbox, ['chat']) }), 'dial');
    const ns = await within(conn.connect('default'), 'connect');
    for (const name of roomNames) {
        await within(ns.joinRoom(name), `join ${name}`);
    }
    const joinedBefore = Array.from(ns.rooms.keys());
    const frames = new FrameLog(conn);
    const result = await outcome(ns.leaveAll(), 'leaveAll');
    // The server handles frames in order, so once this ask is answered the answers to
    // leaveAll's requests have arrived too.
    await within(ns.ask('ask', 'sync'), 'ask');
    const framesAfterLeaveAll = frames.take();
    const leaveEvents = [...inbox.all(neffos.OnRoomLeave), ...inbox.all(neffos.OnRoomLeft)];
    const echoes = [];
    for (const name of roomNames) {
        const emitted = ns.room(name) !== undefined && ns.room(name).emit('chat', `still in ${name}`);
        const echo = await inbox.next('chat');
        echoes.push({ emitted, body: echo.body, room: echo.room });
    }
    report('leave_all', {
        outcome: result,
        joinedBefore,
        joinedAfter: Array.from(ns.rooms.keys()),
        leaveEvents: leaveEvents.map(view),
        framesAfterLeaveAll,
        echoes,
    });
    await closeConn(conn);
};

// neffos.js reconnects by itself when the socket drops (dial option `reconnect`, in ms):
// it probes the endpoint with HEAD, dials again with the X-Websocket-Reconnect header and
// reconnects the namespaces (and re-joins the rooms) on the *new* Conn. The app never
// gets that Conn from `dial`; it meets the new NSConn in its `_OnNamespaceConnected`.
// The test restarts the server after the `ready_for_restart` line.
scenarios.reconnect = async (url, roomName) => {
    const inbox = new Inbox(RECONNECT_WAIT_MS);
    const conn = await within(
        neffos.dial(url, { default: recorder(inbox, ['chat']) }, { reconnect: 100 }),
        'dial',
    );
    const ns = await within(conn.connect('default'), 'connect');
    await inbox.next(neffos.OnNamespaceConnected);
    await within(ns.joinRoom(roomName), 'join');
    await inbox.next(neffos.OnRoomJoined);
    report('ready_for_restart', {
        id: conn.ID,
        ask: describe((await within(ns.ask('ask', 'before'), 'ask')).Body),
    });
    const lost = await inbox.next(neffos.OnNamespaceDisconnect);
    report('lost', { disconnectEvent: view(lost), isClosed: conn.isClosed() });
    const back = await inbox.next(neffos.OnNamespaceConnected);
    const newNs = back.nsConn;
    const rejoined = await inbox.next(neffos.OnRoomJoined);
    const answer = await within(newNs.ask('ask', 'after'), 'ask after reconnect', RECONNECT_WAIT_MS);
    const room = newNs.room(roomName);
    const emitted = room !== undefined && room.emit('chat', 'back in the room');
    const echo = await inbox.next('chat');
    report('reconnected', {
        connectedEvent: view(back),
        rejoinedEvent: view(rejoined),
        newId: newNs.conn.ID,
        sameConnObject: newNs.conn === conn,
        wasReconnected: newNs.conn.wasReconnected(),
        reconnectTries: newNs.conn.reconnectTries,
        ask: describe(answer.Body),
        emitted,
        echo: { body: echo.body, room: echo.room },
    });
    await closeConn(newNs.conn);
};

scenarios.deflate = async (url, mode, size) => {
    const perMessageDeflate = mode === 'on';
    const inbox = new Inbox();
    const conn = await within(
        neffos.dial(url, { default: recorder(inbox, ['chat', 'binary']) }, { perMessageDeflate }),
        'dial',
    );
    const ns = await within(conn.connect('default'), 'connect');
    const big = 'neffos; over deflate\n'.repeat(Math.ceil(Number(size) / 21)).slice(0, Number(size));
    const answer = await within(ns.ask('ask', big), 'big ask');
    ns.emit('chat', big);
    const echo = await inbox.next('chat');
    const bytes = Uint8Array.from({ length: Number(size) }, (_, i) => (i * 7) % 256);
    ns.emitBinary('binary', bytes);
    const reversed = await inbox.next('binary');
    const expected = Array.from(bytes).reverse();
    const got = reversed.body && reversed.body.ArrayBuffer;
    report('deflate', {
        extensions: conn.conn.extensions,
        askLength: answer.Body.length,
        askOk: answer.Body === 'pong:' + big,
        chatOk: echo.body === big,
        binaryOk: Array.isArray(got) && got.length === expected.length
            && got.every((b, i) => b === expected[i]),
        small: describe((await within(ns.ask('ask', 'small'), 'small ask')).Body),
    });
    await closeConn(conn);
};

// --------------------------------------------------------------------------------------

async function main() {
    const [name, url, ...args] = process.argv.slice(2);
    const scenario = scenarios[name];
    if (scenario === undefined || url === undefined) {
        process.stderr.write(
            `usage: node scenario.mjs <scenario> <ws-url> [args...]\n` +
                `scenarios: ${Object.keys(scenarios).join(', ')}\n`,
        );
        process.exit(64);
    }
    const watchdog = setTimeout(() => {
        process.stderr.write(`scenario ${name} did not finish within ${WATCHDOG_MS} ms\n`);
        process.exit(3);
    }, WATCHDOG_MS);
    try {
        await scenario(url, ...args);
    } catch (err) {
        process.stderr.write(`scenario ${name} failed: ${err && err.stack ? err.stack : err}\n`);
        process.exit(1);
    }
    clearTimeout(watchdog);
    report('end');
    process.exit(0);
}

await main();
