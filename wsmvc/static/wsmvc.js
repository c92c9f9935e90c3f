/**
 * wsmvc.js: the JavaScript client of wsmvc, speaking the neffos wire protocol.
 *
 * One ES module, no dependencies, no build step. It runs in browsers and in Node 18+
 * (with Node's own `WebSocket`: behind `--experimental-websocket` in Node 20, on by default
 * in 22; or with any `WebSocket` constructor given as the `WebSocket` option, such as the
 * `ws` package's). A wsmvc server serves this file next to its endpoint:
 *
 *     import { dial } from "/chat/wsmvc.js";            // Server.mount(app, "/chat")
 *     const conn = await dial("/chat", { chat: { OnMessage: (ns, msg) => show(msg.Body) } });
 *     const chat = await conn.connect("chat");
 *     chat.emit("OnMessage", "hello");
 *
 * The API follows neffos.js (the same names, the same handler signature, the same message
 * fields), so a page moves over by changing its import. What it adds: every request has a
 * timeout and every promise settles; request tokens are never reused; reconnecting (on by
 * default) gets the same connection back from a wsmvc server with recovery (nothing lost
 * either way, docs/recovery.md), or restores namespaces and rooms one request at a time,
 * in the order they were made, and keeps what the page sends meanwhile. The guide is
 * docs/client-js.md; the protocol is the neffos wire protocol (neffos-protocol.md).
 *
 * Code map: constants and errors; Message and the envelope codec; the handler table; the
 * transport (one websocket: `Link`, and `handshake`); `Conn` (requests, dispatch of what
 * the server sends, losing and restoring the connection); `NSConn` and `Room` (thin views
 * that call their Conn); `dial`.
 */

// -- constants ----------------------------------------------------------------------------

/** Local event fired before a namespace connect; the server also sends it as a request. */
export const OnNamespaceConnect = '_OnNamespaceConnect';
/** Local event fired once a namespace is connected. */
export const OnNamespaceConnected = '_OnNamespaceConnected';
/** Namespace disconnect: request, and local event (forced when the connection went). */
export const OnNamespaceDisconnect = '_OnNamespaceDisconnect';
/** Room join: request, and local event fired before the join. */
export const OnRoomJoin = '_OnRoomJoin';
/** Local event fired once a room is joined. */
export const OnRoomJoined = '_OnRoomJoined';
/** Room leave: request, and local event fired before the leave. */
export const OnRoomLeave = '_OnRoomLeave';
/** Local event fired once a room is left. */
export const OnRoomLeft = '_OnRoomLeft';
/** The handler key that gets the events of a namespace that have no handler of their own. */
export const OnAnyEvent = '_OnAnyEvent';
/** The handler key of native messages (frames that are not neffos envelopes), namespace "". */
export const OnNativeMessage = '_OnNativeMessage';
/** The query parameter prefix that carries headers in browsers (they cannot set headers). */
export const URLParamAsHeaderPrefix = 'X-Websocket-Header-';

const RECONNECT_HEADER = 'X-Websocket-Reconnect';
// Connection state recovery (docs/recovery.md, "The wire contract").
const RECOVERY_KEY = 'wsmvc-recovery';
const RECOVERY_RECEIVED = 'wsmvc-received';
const RECOVERY_EVENT = '_wsmvcRecovery';
const ABNORMAL_CLOSURE = 1006; // the socket ended without a close frame: a loss recovery covers
const ESCAPED_SEMICOLON = '@%!semicolon@%!';
const SEMICOLON = 0x3b;
const SYSTEM_EVENTS = new Set([
    OnNamespaceConnect,
    OnNamespaceConnected,
    OnNamespaceDisconnect,
    OnRoomJoin,
    OnRoomJoined,
    OnRoomLeave,
    OnRoomLeft,
]);
const OPEN = 1; // WebSocket.OPEN
const MAX_TIMER_MS = 2 ** 31 - 1;

const DEFAULTS = Object.freeze({
    askTimeout: 30_000,
    dialTimeout: 10_000,
    queueLimit: 256,
});
const RECONNECT_DEFAULTS = Object.freeze({
    initialDelay: 500,
    maxDelay: 10_000,
    factor: 2,
    jitter: 0.5,
    maxAttempts: Infinity,
});
// The server's Recovery() defaults: how long a lost connection is kept, and how much of
// what this side sent is kept for sending again.
const RECOVERY_DEFAULTS = Object.freeze({
    window: 120_000,
    maxMessages: 1000,
    maxBytes: 1 << 20,
});

/**
 * Whether `event` is one of neffos' seven system events (connect, connected, disconnect,
 * join, joined, leave, left).
 * @param {string} event
 * @returns {boolean}
 */
export function isSystemEvent(event) {
    return SYSTEM_EVENTS.has(event);
}

// -- errors -------------------------------------------------------------------------------

/**
 * The other side answered with an error: a refused connect, join, leave or disconnect, or
 * an ask whose handler failed. `message` is the server's text, exactly.
 */
export class EventError extends Error {
    /** @param {string} text @param {Message} [msg] the error answer */
    constructor(text, msg) {
        super(text);
        this.name = 'EventError';
        /** The error answer as received (undefined for a local refusal). */
        this.msg = msg;
    }
}

/** The server refused the connection in its handshake (`H<reason>`): `message` is the reason. */
export class RejectError extends Error {
    /** @param {string} reason */
    constructor(reason) {
        super(reason);
        this.name = 'RejectError';
        this.reason = reason;
    }
}

/** A request got no answer within its timeout (ms). */
export class AskTimeoutError extends Error {
    /** @param {string} what @param {number} timeout */
    constructor(what, timeout) {
        super(`no answer to ${what} within ${timeout} ms`);
        this.name = 'AskTimeoutError';
        this.timeout = timeout;
    }
}

/**
 * The connection closed (or could not open, or was lost) before the operation ended.
 * `code` and `reason` are the websocket's close code and reason, when there was one.
 */
export class ConnectionClosedError extends Error {
    /** @param {string} message @param {number} [code] @param {string} [reason] */
    constructor(message, code, reason = '') {
        super(message);
        this.name = 'ConnectionClosedError';
        this.code = code;
        this.reason = reason;
    }
}

/**
 * Whether `err` says the connection closed (neffos.js' `isCloseError`).
 * @param {unknown} err
 * @returns {boolean}
 */
export function isCloseError(err) {
    return err instanceof ConnectionClosedError;
}

// -- bodies -------------------------------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder(); // lenient: bad bytes become U+FFFD
const strictDecoder = new TextDecoder('utf-8', { fatal: true });

/** @returns {boolean} whether `value` is an ArrayBuffer (of any realm) */
function isArrayBuffer(value) {
    return Object.prototype.toString.call(value) === '[object ArrayBuffer]';
}

/** @returns {boolean} whether `value` is bytes: an ArrayBuffer or a view of one */
function isBytes(value) {
    return isArrayBuffer(value) || ArrayBuffer.isView(value);
}

/**
 * `body` as a Uint8Array: strings as UTF-8, buffers and views without a copy.
 * @param {string | ArrayBuffer | ArrayBufferView} body
 * @returns {Uint8Array}
 */
function toBytes(body) {
    if (typeof body === 'string') {
        return encoder.encode(body);
    }
    if (isArrayBuffer(body)) {
        return new Uint8Array(body);
    }
    return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
}

/**
 * What goes on the wire for a body given by the app: strings and bytes as they are,
 * `undefined`/`null` as nothing, anything else as JSON.
 * @param {unknown} body
 * @returns {string | ArrayBuffer | ArrayBufferView}
 */
function wireBody(body) {
    if (body === undefined || body === null) {
        return '';
    }
    if (typeof body === 'string' || isBytes(body)) {
        return body;
    }
    return JSON.stringify(body);
}

/**
 * The JSON text of `obj` (neffos.js' `marshal`; `emit` does it for any non-string body).
 * @param {unknown} obj
 * @returns {string}
 */
export function marshal(obj) {
    return JSON.stringify(obj);
}

/** A handler's answer: `return reply(body)` sends `body` back with the same event. */
class Reply {
    constructor(body) {
        this.body = body;
    }
}

/**
 * Answer the message being handled with `body` (as neffos.js' `reply`). A handler may also
 * just return the body when the server asked (the message has a token).
 * @param {unknown} body
 * @returns {Reply}
 */
export function reply(body) {
    return new Reply(body);
}

// -- Message ------------------------------------------------------------------------------

/**
 * One neffos message, with neffos.js' field names. `Body` is a string for a text frame
 * and an ArrayBuffer for a binary frame (as in neffos.js); `text` and `bytes` give either
 * one as a string or a Uint8Array.
 */
export class Message {
    /** @param {Partial<Message>} [fields] */
    constructor(fields = {}) {
        /** The request token ("" for fire-and-forget). */
        this.wait = '';
        this.Namespace = '';
        this.Room = '';
        this.Event = '';
        /** @type {string | ArrayBuffer | ArrayBufferView} */
        this.Body = '';
        /** @type {Error | undefined} set when the message carries an error */
        this.Err = undefined;
        this.isNoOp = false;
        /** Not an incoming action but a forced one (the connection or namespace went). */
        this.IsForced = false;
        /** Fired by this side itself (a local event), not received. */
        this.IsLocal = false;
        /** A native message: a frame that is not an envelope (only Body is set). */
        this.IsNative = false;
        /** Sent, or received, in a binary frame. */
        this.SetBinary = false;
        Object.assign(this, fields);
    }

    /** Whether the message carries an error (`Err`). */
    get isError() {
        return this.Err !== undefined;
    }

    /** The body as a string (binary bodies decoded as UTF-8). */
    get text() {
        return typeof this.Body === 'string' ? this.Body : decoder.decode(toBytes(this.Body));
    }

    /** The body as bytes (string bodies encoded as UTF-8). */
    get bytes() {
        return toBytes(this.Body);
    }

    /** The body parsed as JSON (neffos.js' `unmarshal`). */
    unmarshal() {
        return JSON.parse(this.text);
    }
}

// -- the envelope -------------------------------------------------------------------------

function escapeName(name) {
    return name.replaceAll(';', ESCAPED_SEMICOLON);
}

function unescapeName(name) {
    return name.replaceAll(ESCAPED_SEMICOLON, ';');
}

/**
 * The frame of `msg`: a string for a text frame, a Uint8Array for a binary one. A native
 * message without a token is its body alone; an error goes as its text with isError 1;
 * bytes, or `SetBinary`, make a binary frame.
 * @param {Message} msg
 * @returns {string | Uint8Array}
 */
export function encode(msg) {
    const body = msg.Err !== undefined ? errorText(msg.Err) : wireBody(msg.Body);
    if (msg.IsNative && !msg.wait) {
        return typeof body === 'string' && !msg.SetBinary ? body : toBytes(body);
    }
    const header = [
        msg.wait,
        escapeName(msg.Namespace),
        escapeName(msg.Room),
        escapeName(msg.Event),
        msg.Err !== undefined ? '1' : '0',
        msg.isNoOp ? '1' : '0',
        '',
    ].join(';');
    if (typeof body === 'string' && !msg.SetBinary) {
        return header + body;
    }
    const head = encoder.encode(header);
    const tail = toBytes(body);
    const frame = new Uint8Array(head.length + tail.length);
    frame.set(head);
    frame.set(tail, head.length);
    return frame;
}

/** The empty reply that acknowledges a request: its token and six separators. */
function emptyReply(token) {
    return `${token};;;;;;`;
}

/** A non-empty error text for `err` (an empty one would read as "no error"). */
function errorText(err) {
    const text = err instanceof Error ? err.message : String(err);
    return text || 'error';
}

/**
 * The message in a received frame, or `null` when it is not a valid envelope (ignored, as
 * the protocol says). With `native` (namespace "" handles native messages) a frame that is
 * not an envelope is a native message instead.
 * @param {string | ArrayBuffer} data
 * @param {boolean} native
 * @returns {Message | null}
 */
export function decode(data, native = false) {
    const binary = typeof data !== 'string';
    const cut = binary ? separatorsInBytes(new Uint8Array(data)) : separatorsInText(data);
    const size = binary ? data.byteLength : data.length;
    if (size === 0) {
        return null;
    }
    if (cut.length < 6) {
        if (!native) {
            return null;
        }
        return new Message({
            Event: OnNativeMessage,
            Body: data,
            IsNative: true,
            SetBinary: binary,
        });
    }
    const fields = binary ? headerOfBytes(data, cut[5]) : data.slice(0, cut[5]).split(';');
    if (fields === null) {
        return null; // header fields that are not UTF-8
    }
    const body = data.slice(cut[5] + 1);
    const msg = new Message({
        wait: fields[0],
        Namespace: unescapeName(fields[1]),
        Room: unescapeName(fields[2]),
        Event: unescapeName(fields[3]),
        isNoOp: fields[5] === '1',
        SetBinary: binary,
    });
    const empty = binary ? body.byteLength === 0 : body.length === 0;
    if (fields[4] === '1' && !empty) {
        msg.Err = new EventError(binary ? decoder.decode(body) : body, msg);
    } else {
        msg.Body = body;
    }
    return msg;
}

/** The offsets of the first six `;` of a string. */
function separatorsInText(text) {
    const cut = [];
    for (let at = text.indexOf(';'); at !== -1 && cut.length < 6; at = text.indexOf(';', at + 1)) {
        cut.push(at);
    }
    return cut;
}

/** The offsets of the first six `;` bytes (a `;` never occurs inside a UTF-8 sequence). */
function separatorsInBytes(bytes) {
    const cut = [];
    for (let at = bytes.indexOf(SEMICOLON); at !== -1 && cut.length < 6; ) {
        cut.push(at);
        at = bytes.indexOf(SEMICOLON, at + 1);
    }
    return cut;
}

/** The six header fields of a binary frame, or null when they are not UTF-8. */
function headerOfBytes(buffer, end) {
    try {
        return strictDecoder.decode(new Uint8Array(buffer, 0, end)).split(';');
    } catch {
        return null;
    }
}

// -- tokens -------------------------------------------------------------------------------

let lastToken = 0;

/**
 * A request token, unique for the life of this module (the page): never reused, not even
 * by another connection or after a reconnect, so a late answer can never settle a newer
 * request. `$` marks client requests (the server's own tokens never start with it).
 */
function nextToken() {
    lastToken += 1;
    return `$${lastToken}`;
}

// -- handlers -----------------------------------------------------------------------------

/**
 * The handler table: namespace -> event -> handler, from `{ns: {event: fn}}`, a Map of
 * Maps, or (as neffos.js allows) `{event: fn}` for namespace "".
 * @returns {Map<string, Map<string, Function>>}
 */
function handlerTable(namespaces) {
    const table = new Map();
    const entries = (value) => (value instanceof Map ? [...value] : Object.entries(value ?? {}));
    const top = entries(namespaces);
    if (top.length > 0 && top.every(([, value]) => typeof value === 'function')) {
        return new Map([['', new Map(top)]]);
    }
    for (const [namespace, events] of top) {
        const handlers = new Map();
        for (const [event, fn] of entries(events)) {
            if (typeof fn !== 'function') {
                throw new TypeError(`the handler of "${event}" in namespace "${namespace}" is not a function`);
            }
            handlers.set(event, fn);
        }
        table.set(namespace, handlers);
    }
    return table;
}

/** Whether the table is exactly {"": {_OnNativeMessage}}: the server speaks raw frames. */
function isNativeOnly(table) {
    const only = table.get('');
    return table.size === 1 && only !== undefined && only.size === 1 && only.has(OnNativeMessage);
}

/** What a handler's result asks for: {reply: body}, {error: text} or {} (nothing). */
async function outcomeOf(call) {
    let value;
    try {
        value = await call();
    } catch (err) {
        return { error: errorText(err), thrown: err };
    }
    if (value instanceof Reply) {
        return { reply: value.body };
    }
    if (value instanceof Error) {
        return { error: errorText(value) };
    }
    if (value === undefined || value === null) {
        return {};
    }
    return { value };
}

// -- options ------------------------------------------------------------------------------

/** The dial options with their defaults, checked (TypeError for a wrong one). */
function normalizeOptions(options = {}) {
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== 'function') {
        throw new TypeError(
            'wsmvc: no WebSocket: pass the `WebSocket` option (e.g. from the ws package), ' +
                'or run Node 20 with --experimental-websocket (Node 22+ has it built in)',
        );
    }
    const positive = (name, value) => {
        if (!(typeof value === 'number' && value > 0)) {
            throw new TypeError(`wsmvc: ${name} must be a positive number of ms, not ${value}`);
        }
        return value;
    };
    const count = (name, value) => {
        if (!(Number.isInteger(value) && value >= 0)) {
            throw new TypeError(`wsmvc: ${name} must be a whole number, 0 or more, not ${value}`);
        }
        return value;
    };
    const callback = (name) => {
        const fn = options[name];
        if (fn !== undefined && typeof fn !== 'function') {
            throw new TypeError(`wsmvc: ${name} must be a function`);
        }
        return fn;
    };
    return {
        WebSocket: WS,
        headers: { ...(options.headers ?? {}) },
        protocols: options.protocols === undefined ? [] : [].concat(options.protocols),
        askTimeout: positive('askTimeout', options.askTimeout ?? DEFAULTS.askTimeout),
        dialTimeout: positive('dialTimeout', options.dialTimeout ?? DEFAULTS.dialTimeout),
        queueLimit: count('queueLimit', options.queueLimit ?? DEFAULTS.queueLimit),
        reconnect: reconnectPolicy(options.reconnect),
        recovery: recoveryPolicy(options.recovery),
        onLost: callback('onLost'),
        onRestored: callback('onRestored'),
        onClosed: callback('onClosed'),
        onError: callback('onError') ?? ((err) => console.error('wsmvc:', err)),
    };
}

/**
 * The reconnect policy: `true`/`undefined` (the defaults), `false` (never), a number (the
 * first delay, ms, as neffos.js' `reconnect: ms`), or an object overriding the defaults.
 * @returns {null | typeof RECONNECT_DEFAULTS}
 */
function reconnectPolicy(option) {
    if (option === false || option === 0) {
        return null;
    }
    const given = typeof option === 'number' ? { initialDelay: option } : option === true ? {} : (option ?? {});
    const policy = { ...RECONNECT_DEFAULTS, ...given };
    const bad =
        !(policy.initialDelay >= 0) ||
        !(policy.maxDelay >= policy.initialDelay) ||
        !(policy.factor >= 1) ||
        !(policy.jitter >= 0 && policy.jitter <= 1) ||
        !(policy.maxAttempts >= 1);
    if (bad) {
        throw new TypeError(`wsmvc: invalid reconnect option ${JSON.stringify(option)}`);
    }
    return policy;
}

/**
 * The recovery policy: `true`/`undefined` (the defaults), `false` (never ask), or an
 * object overriding `window` (ms), `maxMessages` and `maxBytes`. Only a connection that
 * reconnects uses it.
 * @returns {null | typeof RECOVERY_DEFAULTS}
 */
function recoveryPolicy(option) {
    if (option === false) {
        return null;
    }
    const policy = { ...RECOVERY_DEFAULTS, ...(option === true ? {} : (option ?? {})) };
    const bad =
        !(policy.window > 0) ||
        !(Number.isInteger(policy.maxMessages) && policy.maxMessages > 0) ||
        !(Number.isInteger(policy.maxBytes) && policy.maxBytes > 0);
    if (bad) {
        throw new TypeError(`wsmvc: invalid recovery option ${JSON.stringify(option)}`);
    }
    return policy;
}

/**
 * The key and the server's count (undefined: a new connection) of a recovery frame, or
 * null when `data` is not one.
 * @returns {null | {key: string, serverRead: number | undefined}}
 */
function readRecoveryFrame(data) {
    const msg = typeof data === 'string' ? decode(data) : null;
    if (msg === null || msg.Event !== RECOVERY_EVENT || msg.Namespace !== '' || msg.wait) {
        return null;
    }
    const words = msg.text.split(' ');
    if (words.length === 1 && words[0]) {
        return { key: words[0], serverRead: undefined };
    }
    if (words.length === 2 && words[0] && /^[0-9]{1,18}$/.test(words[1])) {
        return { key: words[0], serverRead: Number(words[1]) };
    }
    return null;
}

/** The size recovery counts of a frame: a string's length, bytes' byteLength. */
function frameSize(frame) {
    return typeof frame === 'string' ? frame.length : frame.byteLength;
}

/**
 * The wait before reconnect attempt `attempt` (0 first): exponential from `initialDelay`
 * by `factor` up to `maxDelay`, less a random part of up to `jitter` of it (so that many
 * clients dropped at once do not come back at once).
 */
function backoffDelay(policy, attempt) {
    const full = Math.min(policy.maxDelay, policy.initialDelay * policy.factor ** attempt);
    return full * (1 - policy.jitter * Math.random());
}

// -- the transport ------------------------------------------------------------------------

const isNode = typeof globalThis.process?.versions?.node === 'string';

/**
 * The websocket URL of `url`: relative URLs resolve against the page (`/chat` ->
 * `ws://<host>/chat`, `wss:` under https), http(s) becomes ws(s).
 * @returns {URL}
 */
function endpointOf(url) {
    let resolved;
    try {
        resolved = new URL(url, globalThis.location?.href);
    } catch {
        throw new TypeError(`wsmvc: cannot resolve "${url}": outside a page the URL must be absolute`);
    }
    const schemes = { 'http:': 'ws:', 'https:': 'wss:', 'ws:': 'ws:', 'wss:': 'wss:' };
    const scheme = schemes[resolved.protocol];
    if (scheme === undefined) {
        throw new TypeError(`wsmvc: "${url}" is not a ws(s) or http(s) URL`);
    }
    resolved.protocol = scheme;
    return resolved;
}

/**
 * A new websocket to `endpoint`. Headers are real headers in Node (the `ws` package takes
 * them as its third argument, Node's own WebSocket in its init object); browsers cannot
 * set any, so they go as `X-Websocket-Header-<Name>` query parameters, which wsmvc (and
 * neffos) servers read as headers.
 */
function openSocket(options, endpoint, headers, query = {}) {
    const WS = options.WebSocket;
    const url = new URL(endpoint);
    for (const [name, value] of Object.entries(query)) {
        url.searchParams.set(name, value);
    }
    const names = Object.keys(headers);
    if (names.length === 0) {
        return new WS(url.href, options.protocols);
    }
    if (!isNode) {
        for (const name of names) {
            url.searchParams.append(URLParamAsHeaderPrefix + name, String(headers[name]));
        }
        return new WS(url.href, options.protocols);
    }
    if (typeof WS.prototype?.on === 'function') {
        return new WS(url.href, options.protocols, { headers }); // an EventEmitter: the ws package
    }
    return new WS(url.href, { protocols: options.protocols, headers });
}

/**
 * One websocket. Its events go to a listener; while there is none (between the handshake
 * and the connection taking it over) they wait in order, so no frame is lost even when
 * several arrive in one read.
 */
class Link {
    constructor(socket) {
        this.socket = socket;
        this.listener = null;
        this.backlog = [];
        this.opened = false;
        this.ended = false;
        socket.binaryType = 'arraybuffer';
        socket.onopen = () => {
            this.opened = true;
            this.deliver('open', undefined);
        };
        socket.onmessage = (event) => this.deliver('message', event.data);
        socket.onclose = (event) => this.end(event);
        // A failed connection is an error event and then a close event; Node 20's WebSocket
        // sends the error alone (and stays CONNECTING), so before `open` an error ends it.
        socket.onerror = () => {
            if (!this.opened) {
                this.end({ code: 1006, reason: '' });
            }
        };
    }

    /** The socket's end: one close event for the listener, whoever reported it first. */
    end(event) {
        if (!this.ended) {
            this.ended = true;
            this.deliver('close', event);
        }
    }

    deliver(kind, value) {
        if (this.listener === null) {
            this.backlog.push([kind, value]);
        } else {
            this.listener[kind]?.(value);
        }
    }

    /** Send events to `listener` from now on (the waiting ones first), or hold them (null). */
    listen(listener) {
        this.listener = listener;
        while (this.listener === listener && listener !== null && this.backlog.length > 0) {
            const [kind, value] = this.backlog.shift();
            listener[kind]?.(value);
        }
    }

    /** Whether the frame could be handed to the socket (it is open). */
    send(frame) {
        if (this.socket.readyState !== OPEN) {
            return false;
        }
        this.socket.send(frame);
        return true;
    }

    close(code = 1000, reason = '') {
        try {
            this.socket.close(code, reason);
        } catch {
            this.socket.close(); // a code the implementation refuses
        }
    }
}

/**
 * Open a websocket and do neffos' handshake: send `M`, read `A<id>` (or `H<reason>`).
 * With `recovery` (`{key: null}`: ask for it; `{key, received}`: come back for the
 * connection of `key`) the upgrade asks for connection state recovery, and a recovery
 * frame may come before `A<id>`. Resolves with the link (its later events held for the
 * connection), the id, and what the recovery frame said (`{key, serverRead}`, serverRead
 * undefined for a new connection; null without one); rejects with RejectError for `H`,
 * ConnectionClosedError when the socket fails or closes first, or when `dialTimeout`
 * passes. Native-only connections have no handshake.
 * @returns {Promise<{link: Link, id: string, recovery: null | {key: string, serverRead: number | undefined}}>}
 */
function handshake(options, endpoint, { native, tries, recovery = null }) {
    const headers = { ...options.headers };
    if (tries > 0) {
        headers[RECONNECT_HEADER] = String(tries);
    }
    const query = {};
    if (recovery !== null) {
        query[RECOVERY_KEY] = recovery.key ?? '1';
        if (recovery.key) {
            query[RECOVERY_RECEIVED] = String(recovery.received);
        }
    }
    return new Promise((resolve, reject) => {
        let link;
        let offered = null; // the recovery frame's content
        try {
            link = new Link(openSocket(options, endpoint, headers, query));
        } catch (err) {
            reject(err);
            return;
        }
        const timer = setTimeout(() => {
            fail(new ConnectionClosedError(`no handshake from ${endpoint} within ${options.dialTimeout} ms`));
        }, options.dialTimeout);
        const done = (id) => {
            clearTimeout(timer);
            link.listen(null); // hold what comes next for the connection
            resolve({ link, id, recovery: offered });
        };
        const fail = (err) => {
            clearTimeout(timer);
            link.listen({});
            link.close();
            reject(err);
        };
        link.listen({
            open: () => (native ? done('') : link.send('M')),
            message: (data) => {
                if (typeof data === 'string' && data.startsWith('A')) {
                    done(data.slice(1));
                } else if (typeof data === 'string' && data.startsWith('H')) {
                    fail(new RejectError(data.slice(1)));
                } else if (recovery !== null && offered === null && (offered = readRecoveryFrame(data)) !== null) {
                    if (offered.serverRead !== undefined && !recovery.key) {
                        fail(new ConnectionClosedError(`${endpoint} recovered a connection it was not asked for`));
                    }
                } else {
                    fail(new ConnectionClosedError(`not a neffos server at ${endpoint}: the first frame is no ack`));
                }
            },
            close: (event) => {
                const why = event.reason ? `: ${event.reason}` : '';
                fail(
                    new ConnectionClosedError(
                        `could not connect to ${endpoint} (code ${event.code}${why})`,
                        event.code,
                        event.reason,
                    ),
                );
            },
        });
    });
}

/** A promise and its two functions. */
function deferred() {
    let resolve;
    let reject;
    const promise = new Promise((yes, no) => {
        resolve = yes;
        reject = no;
    });
    return { promise, resolve, reject };
}

// -- Conn ---------------------------------------------------------------------------------

// The Conn's internals that NSConn and Room call (not part of the API).
const request = Symbol('request');
const transmit = Symbol('transmit');
const start = Symbol('start');
const join = Symbol('join');
const leave = Symbol('leave');
const disconnect = Symbol('disconnect');
// NSConn's internals that Conn calls.
const rooms = Symbol('rooms');
const payload = Symbol('payload');
// Set on the NSConns and Rooms the app connected and joined itself: what a reconnect restores.
const byApp = Symbol('byApp');

/**
 * What to say of a request in errors: `ask "ping" in namespace "default"`.
 * @param {Message} msg
 */
function describeRequest(msg) {
    const where = `namespace "${msg.Namespace}"`;
    switch (msg.Event) {
        case OnNamespaceConnect:
            return `connect to ${where}`;
        case OnNamespaceDisconnect:
            return `disconnect from ${where}`;
        case OnRoomJoin:
            return `join of room "${msg.Room}" in ${where}`;
        case OnRoomLeave:
            return `leave of room "${msg.Room}" in ${where}`;
        default:
            return `ask "${msg.Event}" in ${msg.Room ? `room "${msg.Room}" of ` : ''}${where}`;
    }
}

/**
 * A connection to a neffos server, made by {@link dial}. Its state is `"open"`,
 * `"reconnecting"` (lost, coming back: what is sent waits in a queue) or `"closed"` (for
 * good: everything refuses). The namespaces and rooms it has survive a reconnect: the
 * same NSConn and Room objects work before and after. A connection lost without a close
 * frame is *kept* when the server offers recovery: nothing fails and no forced event
 * fires unless it turns out not to come back (the server gives a new connection, or the
 * recovery window passes).
 */
export class Conn {
    #options;
    #endpoint;
    #handlers;
    #native;
    #link = null;
    /** @type {"open" | "reconnecting" | "closed"} */
    #state = 'open';
    /** @type {Map<string, NSConn>} connected namespaces, in the order connected */
    #namespaces = new Map();
    /** @type {Map<string, {resolve, reject, timer, msg}>} requests waiting for an answer */
    #pending = new Map();
    /** @type {{msg: Message}[]} what was sent while reconnecting */
    #queue = [];
    /** @type {Map<string, {promise, resolve, reject}[]>} waitServerConnect calls */
    #serverConnects = new Map();
    #retryTimer = null;
    #closed = deferred();
    // Recovery (docs/recovery.md): the server's key for the current connection (null: it
    // offers none), the data frames read and sent since A<id>, the last ones sent.
    #recovery = null;
    #received = 0;
    #sent = 0;
    /** @type {{frame: string | Uint8Array, size: number}[]} */
    #ring = [];
    #ringBytes = 0;
    /** The loss of a kept connection (its error, and #sent then); null otherwise. */
    #kept = null;
    #keptTimer = null;

    /** @internal use {@link dial} */
    constructor(endpoint, handlers, options) {
        this.#endpoint = endpoint;
        this.#handlers = handlers;
        this.#native = isNativeOnly(handlers);
        this.#options = options;
        /** The connection id the server gave (`A<id>`); a new one after a reconnect, unless recovered. */
        this.id = '';
        /** The reconnect attempt that made the current socket (0: the first dial). */
        this.reconnectTries = 0;
        /** How many times the connection was restored after a loss. */
        this.reconnects = 0;
    }

    /** The connection id, neffos.js' name. */
    get ID() {
        return this.id;
    }

    /** "open", "reconnecting" or "closed". */
    get state() {
        return this.#state;
    }

    /** Whether the connection is closed for good (no reconnect will follow). */
    get closed() {
        return this.#state === 'closed';
    }

    /** Whether the connection is closed for good (neffos.js' method). */
    isClosed() {
        return this.closed;
    }

    /** Whether the current socket is the result of a reconnect. */
    wasReconnected() {
        return this.reconnects > 0;
    }

    /** The connected namespaces, in the order they were connected. */
    get namespaces() {
        return new Map(this.#namespaces);
    }

    /**
     * The connected namespace `name`, or undefined.
     * @param {string} name
     * @returns {NSConn | undefined}
     */
    namespace(name) {
        return this.#namespaces.get(name);
    }

    /**
     * Connect to `namespace` (declared in dial's handlers). Resolves with its NSConn once
     * the server agreed (at once if already connected). Rejects with EventError when the
     * local `_OnNamespaceConnect` handler or the server refuses (its text: `bad namespace`
     * for one it does not have), AskTimeoutError, or ConnectionClosedError.
     * @param {string} namespace
     * @param {unknown} [payload] the connect request's body (wsmvc servers pass it to on_namespace_connect)
     * @param {{timeout?: number}} [options] timeout in ms (default: askTimeout)
     * @returns {Promise<NSConn>}
     */
    async connect(namespace, payload = '', { timeout } = {}) {
        const known = this.#namespaces.get(namespace);
        if (known !== undefined) {
            return known;
        }
        if (!this.#handlers.has(namespace)) {
            throw new EventError('bad namespace');
        }
        const ns = new NSConn(this, namespace);
        ns[byApp] = true;
        await this.#openNamespace(ns, payload, timeout);
        return ns;
    }

    /**
     * Resolves with the NSConn of `namespace` once the server connects this client to it
     * (at once if connected); rejects with ConnectionClosedError when the connection closes.
     * @param {string} namespace
     * @returns {Promise<NSConn>}
     */
    waitServerConnect(namespace) {
        const known = this.#namespaces.get(namespace);
        if (known !== undefined) {
            return Promise.resolve(known);
        }
        if (this.closed) {
            return Promise.reject(new ConnectionClosedError('the connection is closed'));
        }
        const waiter = deferred();
        const waiters = this.#serverConnects.get(namespace) ?? [];
        waiters.push(waiter);
        this.#serverConnects.set(namespace, waiters);
        return waiter.promise;
    }

    /**
     * Send `msg` (with its Namespace, Room, Event, Body) as a request and resolve with the
     * answer. Rejects with EventError (an error answer), AskTimeoutError, or
     * ConnectionClosedError.
     * @param {Message} msg
     * @param {{timeout?: number}} [options] ms (default: askTimeout)
     * @returns {Promise<Message>}
     */
    ask(msg, { timeout } = {}) {
        return this[request](new Message({ ...msg, wait: '' }), timeout);
    }

    /**
     * Send `msg` as it is (neffos.js' `write`); while reconnecting it waits in the queue.
     * Returns false when it was not sent: closed, queue full, or (as neffos.js) a namespace
     * that is not connected or a room not joined.
     * @param {Message} msg
     * @returns {boolean}
     */
    write(msg) {
        return this[transmit](msg instanceof Message ? msg : new Message(msg));
    }

    /**
     * Close for good: local forced leave and disconnect events fire, every waiting request
     * rejects with ConnectionClosedError, no reconnect follows. Resolves once the socket
     * closed.
     * @param {number} [code] the websocket close code (default 1000)
     * @param {string} [reason]
     * @returns {Promise<void>}
     */
    close(code = 1000, reason = '') {
        if (this.#state !== 'closed') {
            const link = this.#link;
            this.#finish(new ConnectionClosedError('closed by the client', code, reason), {
                code,
                reason,
                byClient: true,
            });
            if (link === null) {
                this.#closed.resolve();
            } else {
                link.listen({ close: () => this.#closed.resolve() });
                link.close(code, reason);
            }
        }
        return this.#closed.promise;
    }

    // -- opening ------------------------------------------------------------------------

    /** The first dial: the handshake, then the connection takes the socket. */
    async [start]() {
        const { link, id, recovery } = await handshake(this.#options, this.#endpoint, {
            native: this.#native,
            tries: 0,
            recovery: this.#asking(),
        });
        if (this.#native) {
            this.#namespaces.set('', new NSConn(this, '')); // before any frame is handled
        }
        this.#adopt(link, id, recovery);
    }

    /** What the next dial asks of recovery: null (nothing), a new connection, or a return. */
    #asking() {
        if (this.#native || this.#options.recovery === null || this.#options.reconnect === null) {
            return null;
        }
        if (this.#kept !== null && this.#recovery !== null) {
            return { key: this.#recovery.key, received: this.#received };
        }
        return { key: null };
    }

    /** Make `link` a new connection's socket (`recovery`: what its recovery frame said). */
    #adopt(link, id, recovery) {
        this.#recovery = recovery === null ? null : { key: recovery.key };
        this.#received = 0;
        this.#sent = 0;
        this.#ring = [];
        this.#ringBytes = 0;
        this.#link = link;
        this.id = id;
        this.#listen(link);
    }

    #listen(link) {
        link.listen({
            message: (data) => this.#receive(data),
            close: (event) => this.#lost(link, event),
        });
    }

    /**
     * Connect `ns` (new, or being restored: then `now`, past the queue): the local
     * `_OnNamespaceConnect`, the request, then `_OnNamespaceConnected`.
     */
    async #openNamespace(ns, body, timeout, now = false) {
        const before = new Message({ Namespace: ns.namespace, Event: OnNamespaceConnect, Body: body, IsLocal: true });
        await this.#refusable(ns, before);
        const msg = new Message({ Namespace: ns.namespace, Event: OnNamespaceConnect, Body: wireBody(body) });
        await this[request](msg, timeout, now);
        ns[payload] = body;
        this.#namespaces.set(ns.namespace, ns);
        this.#fire(ns, new Message({ Namespace: ns.namespace, Event: OnNamespaceConnected, IsLocal: true }));
        this.#settleServerConnects(ns);
    }

    // -- sending ------------------------------------------------------------------------

    /**
     * Send `msg` now, or queue it while reconnecting. False when refused.
     * @param {Message} msg
     */
    [transmit](msg) {
        if (this.#state === 'closed' || !this.#writable(msg)) {
            return false;
        }
        if (this.#state === 'reconnecting') {
            if (this.#queue.length >= this.#options.queueLimit) {
                return false;
            }
            this.#queue.push(msg);
            return true;
        }
        return this.#send(msg);
    }

    /** The protocol's write rules: a connected namespace, a joined room (system requests aside). */
    #writable(msg) {
        if (this.#native || msg.Event === OnNamespaceConnect || msg.Event === OnNamespaceDisconnect) {
            return true;
        }
        const ns = this.#namespaces.get(msg.Namespace);
        if (ns === undefined) {
            return false;
        }
        return !msg.Room || msg.Event === OnRoomJoin || msg.Event === OnRoomLeft || ns[rooms].has(msg.Room);
    }

    /** Hand `msg` to the socket (native messages as their body alone). */
    #send(msg) {
        if (this.#native || (msg.Event === OnNativeMessage && !msg.wait)) {
            msg.IsNative = true;
        }
        return this.#write(encode(msg));
    }

    /**
     * Hand a frame to the socket. With recovery it is also numbered and kept (within the
     * bounds), to send again what the server missed: then it counts as written even when
     * the socket is gone.
     */
    #write(frame) {
        if (this.#recovery !== null) {
            this.#keep(frame);
        }
        const sent = this.#link !== null && this.#link.send(frame);
        return sent || this.#recovery !== null;
    }

    /** Number and keep a frame sent; past the bounds the oldest go. */
    #keep(frame) {
        const bounds = this.#options.recovery;
        const size = frameSize(frame);
        this.#sent += 1;
        this.#ring.push({ frame, size });
        this.#ringBytes += size;
        while (this.#ring.length > bounds.maxMessages || this.#ringBytes > bounds.maxBytes) {
            this.#ringBytes -= this.#ring.shift().size;
            if (this.#kept !== null && this.#sent - this.#ring.length > this.#kept.sent) {
                // A frame written since the loss is gone: the recovery cannot be exact.
                this.#abandon();
                return;
            }
        }
    }

    /** The frames sent after the `count`-th, or null when they are not all kept. */
    #since(count) {
        const first = this.#sent - this.#ring.length;
        if (!(first <= count && count <= this.#sent)) {
            return null;
        }
        return this.#ring.slice(count - first).map((entry) => entry.frame);
    }

    /**
     * Send `msg` with a new token and resolve with the answer (see {@link Conn#ask}).
     * With `now` it goes at once even while reconnecting (the restore's own requests).
     * @param {Message} msg
     * @param {number} [timeout] ms
     * @param {boolean} [now]
     * @returns {Promise<Message>}
     */
    [request](msg, timeout = this.#options.askTimeout, now = false) {
        const waiting = deferred();
        msg.wait = nextToken();
        const what = describeRequest(msg);
        // Past 2^31 - 1 ms a timer would fire at once: such a timeout is no timeout.
        const timer =
            timeout <= MAX_TIMER_MS
                ? setTimeout(() => this.#settle(msg.wait, null, new AskTimeoutError(what, timeout)), timeout)
                : null;
        this.#pending.set(msg.wait, { ...waiting, timer, msg });
        if (!(now ? this.#send(msg) : this[transmit](msg))) {
            this.#settle(msg.wait, null, this.#refusal(msg));
        }
        return waiting.promise;
    }

    /** Why `msg` could not be sent. */
    #refusal(msg) {
        if (this.#state === 'closed') {
            return new ConnectionClosedError('the connection is closed');
        }
        if (this.#state === 'reconnecting') {
            return new ConnectionClosedError(`reconnecting, and ${this.#options.queueLimit} messages wait already`);
        }
        if (!this.#namespaces.has(msg.Namespace)) {
            return new EventError('bad namespace');
        }
        return new EventError(msg.Room ? 'bad room' : 'write closed');
    }

    /** End the request of `token` with its answer or an error (once). */
    #settle(token, answer, error) {
        const entry = this.#pending.get(token);
        if (entry === undefined) {
            return;
        }
        this.#pending.delete(token);
        clearTimeout(entry.timer);
        if (error) {
            entry.reject(error);
        } else if (answer.Err !== undefined) {
            entry.reject(answer.Err);
        } else {
            entry.resolve(answer);
        }
    }

    // -- what the server sends ------------------------------------------------------------

    /** One frame from the server. */
    #receive(data) {
        this.#received += 1;
        if (this.#native) {
            const binary = typeof data !== 'string';
            if ((binary ? data.byteLength : data.length) > 0) {
                this.#dispatch(new Message({ Event: OnNativeMessage, Body: data, IsNative: true, SetBinary: binary }));
            }
            return;
        }
        const msg = decode(data, this.#handlers.get('')?.has(OnNativeMessage) === true);
        if (msg === null) {
            return;
        }
        if (msg.wait.startsWith('$')) {
            // An answer to one of ours; one that comes after its request ended is dropped.
            this.#settle(msg.wait, msg, null);
            return;
        }
        switch (msg.Event) {
            case OnNamespaceConnect:
                this.#serverConnect(msg);
                break;
            case OnNamespaceDisconnect:
                this.#serverDisconnect(msg);
                break;
            case OnRoomJoin:
                this.#serverJoin(msg);
                break;
            case OnRoomLeave:
                this.#serverLeave(msg);
                break;
            default:
                this.#dispatch(msg);
        }
    }

    /** Send an answer to the server's request `msg`: its empty reply, or an error. */
    #answer(msg, error) {
        if (!msg.wait || msg.isNoOp) {
            return;
        }
        if (error === undefined) {
            this.#write(emptyReply(msg.wait));
        } else {
            this.#send(new Message({ ...msg, Body: '', Err: new Error(error) }));
        }
    }

    /** The server connects this client to a namespace (spec 5.2). */
    async #serverConnect(msg) {
        if (!msg.wait || msg.isNoOp) {
            return;
        }
        if (this.#namespaces.has(msg.Namespace)) {
            this.#answer(msg);
            return;
        }
        if (!this.#handlers.has(msg.Namespace)) {
            this.#answer(msg, 'bad namespace');
            return;
        }
        const ns = new NSConn(this, msg.Namespace);
        try {
            await this.#refusable(ns, msg);
        } catch (err) {
            this.#answer(msg, err.message);
            return;
        }
        this.#namespaces.set(ns.namespace, ns);
        this.#answer(msg);
        this.#fire(ns, new Message({ Namespace: ns.namespace, Event: OnNamespaceConnected }));
        this.#settleServerConnects(ns);
    }

    /** The server disconnects this client from a namespace (spec 5.4): it cannot refuse. */
    #serverDisconnect(msg) {
        const ns = this.#namespaces.get(msg.Namespace);
        if (ns !== undefined) {
            this.#leaveRoomsLocally(ns, true);
            this.#dropNamespace(ns, 'the server disconnected');
        }
        this.#answer(msg);
        if (ns !== undefined) {
            this.#fire(ns, new Message({ Namespace: ns.namespace, Event: OnNamespaceDisconnect }));
        }
    }

    /** The server joins this client to a room (spec 6.2); `_OnRoomJoin` may refuse. */
    async #serverJoin(msg) {
        const ns = this.#namespaces.get(msg.Namespace);
        if (ns === undefined) {
            this.#answer(msg, 'bad namespace');
            return;
        }
        if (!ns[rooms].has(msg.Room)) {
            try {
                await this.#refusable(ns, msg);
            } catch (err) {
                this.#answer(msg, err.message);
                return;
            }
            this.#addRoom(ns, msg.Room);
            this.#fire(ns, new Message({ Namespace: ns.namespace, Room: msg.Room, Event: OnRoomJoined }));
        }
        this.#answer(msg);
    }

    /** The server makes this client leave a room (spec 6.4). */
    #serverLeave(msg) {
        const ns = this.#namespaces.get(msg.Namespace);
        if (ns === undefined || !ns[rooms].has(msg.Room)) {
            this.#answer(msg);
            return;
        }
        this.#fire(ns, msg);
        ns[rooms].delete(msg.Room);
        this.#answer(msg);
        this.#fire(ns, new Message({ Namespace: ns.namespace, Room: msg.Room, Event: OnRoomLeft }));
    }

    /**
     * An event for the app's handlers. A server request (it has a token) is always
     * answered: with the handler's result, its error, or `unknown event`; a handler that
     * returns nothing answers nothing (as in neffos).
     */
    async #dispatch(msg) {
        const ns = this.#namespaces.get(msg.Namespace);
        if (ns === undefined) {
            if (msg.wait) {
                this.#answer(msg, 'bad namespace');
            }
            return;
        }
        const handler = this.#handlerOf(ns.namespace, msg.Event);
        if (handler === undefined) {
            if (msg.wait && msg.Err === undefined) {
                this.#answer(msg, `unknown event '${msg.Event}'`);
            }
            return;
        }
        const result = await outcomeOf(() => handler(ns, msg));
        this.#respond(msg, result);
    }

    /** What a handler's result sends back (see {@link Conn#dispatch}). */
    #respond(msg, result) {
        const asked = msg.wait !== '';
        if (result.thrown !== undefined && (!asked || msg.Err !== undefined)) {
            this.#options.onError(result.thrown, msg);
            return;
        }
        if (msg.Err !== undefined || this.#state === 'closed') {
            return; // never answer an error: two peers doing so would bounce it forever
        }
        if ('error' in result) {
            this.#send(new Message({ ...msg, Body: '', Err: new Error(result.error) }));
        } else if ('reply' in result || ('value' in result && asked)) {
            const body = 'reply' in result ? result.reply : result.value;
            this.#send(new Message({ ...msg, Body: wireBody(body), Err: undefined }));
        }
    }

    #handlerOf(namespace, event) {
        const events = this.#handlers.get(namespace);
        return events?.get(event) ?? events?.get(OnAnyEvent);
    }

    /** Call the handler of a local event; its error or throw is reported, never sent. */
    #fire(ns, msg) {
        const handler = this.#handlerOf(ns.namespace, msg.Event);
        if (handler === undefined) {
            return;
        }
        try {
            const result = handler(ns, msg);
            if (typeof result?.then === 'function') {
                result.then(undefined, (err) => this.#options.onError(err, msg));
            }
        } catch (err) {
            this.#options.onError(err, msg);
        }
    }

    /** Call the handler of a "before" event that may refuse: rejects with EventError if it does. */
    async #refusable(ns, msg) {
        const handler = this.#handlerOf(ns.namespace, msg.Event);
        if (handler === undefined) {
            return;
        }
        const result = await outcomeOf(() => handler(ns, msg));
        if ('error' in result) {
            throw new EventError(result.error);
        }
    }

    #settleServerConnects(ns) {
        for (const waiter of this.#serverConnects.get(ns.namespace) ?? []) {
            waiter.resolve(ns);
        }
        this.#serverConnects.delete(ns.namespace);
    }

    // -- namespace and room changes of this side (called by NSConn and Room) -------------

    async [disconnect](ns, timeout) {
        await this[request](new Message({ Namespace: ns.namespace, Event: OnNamespaceDisconnect }), timeout);
        this.#leaveRoomsLocally(ns, true);
        this.#dropNamespace(ns, 'it was disconnected');
        this.#fire(ns, new Message({ Namespace: ns.namespace, Event: OnNamespaceDisconnect, IsLocal: true }));
    }

    async [join](ns, room, timeout) {
        await this.#refusable(
            ns,
            new Message({ Namespace: ns.namespace, Room: room, Event: OnRoomJoin, IsLocal: true }),
        );
        await this[request](new Message({ Namespace: ns.namespace, Room: room, Event: OnRoomJoin }), timeout);
        const joined = this.#addRoom(ns, room);
        joined[byApp] = true;
        this.#fire(ns, new Message({ Namespace: ns.namespace, Room: room, Event: OnRoomJoined, IsLocal: true }));
        return joined;
    }

    async [leave](ns, room, timeout) {
        await this.#refusable(
            ns,
            new Message({ Namespace: ns.namespace, Room: room, Event: OnRoomLeave, IsLocal: true }),
        );
        await this[request](new Message({ Namespace: ns.namespace, Room: room, Event: OnRoomLeave }), timeout);
        ns[rooms].delete(room);
        this.#fire(ns, new Message({ Namespace: ns.namespace, Room: room, Event: OnRoomLeft, IsLocal: true }));
    }

    /** `ns` is no longer connected: its waiting requests fail now, not at their timeout. */
    #dropNamespace(ns, why) {
        this.#namespaces.delete(ns.namespace);
        this.#queue = this.#queue.filter((msg) => msg.Namespace !== ns.namespace);
        const error = new ConnectionClosedError(`namespace "${ns.namespace}" is gone: ${why}`);
        for (const [token, entry] of [...this.#pending]) {
            if (entry.msg.Namespace === ns.namespace) {
                this.#settle(token, null, error);
            }
        }
    }

    /** The Room `name` of `ns`, added to its rooms (the existing one if there is one). */
    #addRoom(ns, name) {
        const room = ns[rooms].get(name) ?? new Room(ns, name);
        ns[rooms].set(name, room);
        return room;
    }

    /** Forced local leave events for every room of `ns` (each: leave, then left). */
    #leaveRoomsLocally(ns, remove) {
        for (const room of [...ns[rooms].keys()]) {
            const fields = { Namespace: ns.namespace, Room: room, IsForced: true, IsLocal: true };
            this.#fire(ns, new Message({ ...fields, Event: OnRoomLeave }));
            if (remove) {
                ns[rooms].delete(room);
            }
            this.#fire(ns, new Message({ ...fields, Event: OnRoomLeft }));
        }
    }

    /** The forced local events of a connection that went: rooms left, namespaces disconnected. */
    #disconnectLocally(remove) {
        if (this.#native) {
            return;
        }
        for (const ns of [...this.#namespaces.values()]) {
            this.#leaveRoomsLocally(ns, remove);
            if (remove) {
                this.#namespaces.delete(ns.namespace);
            }
            const fields = { Namespace: ns.namespace, IsForced: true, IsLocal: true };
            this.#fire(ns, new Message({ ...fields, Event: OnNamespaceDisconnect }));
        }
    }

    // -- losing the connection, and getting it back ----------------------------------------

    /**
     * The socket of `link` closed without `close()`. Without a close frame (1006) and with
     * a server that offers recovery, the connection is kept: nothing fails, no event but
     * `onLost`, and the reconnect comes back for it. Otherwise what was waiting for an
     * answer fails (the server will not answer on another socket), the forced local
     * events fire (as in neffos.js), and either a reconnect starts or the connection is
     * over.
     */
    #lost(link, event) {
        if (link !== this.#link || this.#state === 'closed') {
            return;
        }
        this.#link = null;
        const info = { code: event.code, reason: event.reason ?? '', reconnecting: this.#options.reconnect !== null };
        const why = `the connection was lost (code ${info.code}${info.reason ? `: ${info.reason}` : ''})`;
        const error = new ConnectionClosedError(why, info.code, info.reason);
        if (this.#state === 'open' && info.reconnecting && this.#recovery !== null && info.code === ABNORMAL_CLOSURE) {
            this.#state = 'reconnecting'; // what the app sends waits in the queue
            this.#kept = { error, sent: this.#sent };
            this.#keptTimer = setTimeout(() => this.#abandon(), this.#options.recovery.window);
            this.#notify('onLost', info);
            this.#retry(0);
            return;
        }
        this.#failPending(error);
        if (this.#state === 'reconnecting') {
            this.#recovery = null; // lost again while restoring: the next attempt starts anew
            return; // the attempts go on
        }
        if (info.reconnecting) {
            this.#state = 'reconnecting'; // from now on, what the app sends waits in the queue
        }
        this.#disconnectLocally(!info.reconnecting);
        this.#notify('onLost', info);
        if (info.reconnecting) {
            this.#retry(0);
        } else {
            this.#finish(error, { code: info.code, reason: info.reason, byClient: false });
        }
    }

    /** Try again after the backoff delay of `attempt` (0: the first). */
    #retry(attempt) {
        const policy = this.#options.reconnect;
        if (attempt >= policy.maxAttempts) {
            this.#giveUp(new ConnectionClosedError(`gave up reconnecting after ${attempt} attempts`));
            return;
        }
        this.#retryTimer = setTimeout(() => this.#attempt(attempt + 1), backoffDelay(policy, attempt));
    }

    /**
     * The kept connection will not come back (the server gave a new one, the window
     * passed, more was written than is kept): what waited fails and the forced local
     * events fire now, as for a loss without recovery.
     */
    #abandon() {
        const kept = this.#kept;
        if (kept === null) {
            return;
        }
        this.#kept = null;
        clearTimeout(this.#keptTimer);
        this.#recovery = null;
        this.#failPending(kept.error);
        this.#disconnectLocally(false);
    }

    /** Reconnect attempt `attempt` (1 first): dial, then take the connection back. */
    async #attempt(attempt) {
        this.#retryTimer = null;
        let opened;
        try {
            opened = await handshake(this.#options, this.#endpoint, {
                native: this.#native,
                tries: attempt,
                recovery: this.#asking(),
            });
        } catch (err) {
            if (this.#state !== 'reconnecting') {
                return;
            }
            if (err instanceof RejectError) {
                this.#giveUp(err); // refused by the server itself: trying again will not help
            } else {
                this.#retry(attempt);
            }
            return;
        }
        if (this.#state !== 'reconnecting') {
            opened.link.close(); // closed by the app meanwhile
            return;
        }
        const previousId = this.id;
        this.reconnectTries = attempt;
        const outcome = await this.#resume(opened);
        if (outcome === null || this.#state !== 'reconnecting') {
            if (this.#state === 'reconnecting' && this.#link === null) {
                this.#retry(attempt); // lost again while restoring, or not recovered exactly
            }
            return; // or closed by the app meanwhile
        }
        this.#state = 'open';
        this.reconnects += 1;
        this.#flushQueue();
        if (outcome.recovered) {
            this.#listen(opened.link); // now what the server replays (and sends) is handled
        }
        this.#notify('onRestored', { ...outcome, previousId, attempts: attempt });
    }

    /**
     * What to do once a new socket is acknowledged after a loss: THE one place where the
     * connection's state comes back. When the server recovered the kept connection (its
     * recovery frame has its count of frames read), the same connection goes on over the
     * new socket: this side sends again its frames after that count (the queue and the
     * server's replay follow); nothing else changes. Otherwise it is a new connection: a
     * kept one is abandoned (its forced events fire now), and the client restores what
     * the app connected and joined (see #restore). Resolves with `{failed, recovered}`
     * once done, or null when this socket was lost meanwhile (or could not be recovered
     * exactly: then it is closed, and a new connection follows).
     */
    async #resume(opened) {
        const { link, id, recovery } = opened;
        if (recovery !== null && recovery.serverRead !== undefined) {
            const again = this.#kept !== null && id === this.id ? this.#since(recovery.serverRead) : null;
            if (again === null) {
                this.#abandon();
                link.close(1000, 'not recovered exactly'); // the server ends it for good
                return null;
            }
            clearTimeout(this.#keptTimer);
            this.#kept = null;
            this.#recovery = { key: recovery.key };
            this.#link = link; // its events wait until the queue went out (#attempt)
            for (const frame of again) {
                link.send(frame);
            }
            return { failed: [], recovered: true };
        }
        this.#abandon();
        this.#adopt(link, id, recovery);
        const restored = await this.#restore(link);
        return restored === null ? null : { ...restored, recovered: false };
    }

    /**
     * Restore what the app connected and joined itself: its namespaces in the order
     * connected and, after each, its rooms in the order joined; one request at a time,
     * each waiting for its answer. What the server connected or joined on its own is the
     * server's to redo on the new connection: forgotten (its forced events fired when the
     * connection was lost). One refused now (an error answer, a local handler's refusal,
     * no answer in askTimeout) is forgotten and listed in `failed`. Resolves with
     * `{failed}`, or null when this socket was lost meanwhile.
     */
    async #restore(link) {
        const failed = [];
        if (this.#native) {
            return { failed };
        }
        for (const ns of [...this.#namespaces.values()]) {
            const error = ns[byApp]
                ? await this.#restoreStep(() => this.#openNamespace(ns, ns[payload], undefined, true))
                : null;
            if (error === 'lost') {
                return null;
            }
            if (!ns[byApp] || error !== null) {
                this.#dropNamespace(ns, error ? 'refused after a reconnect' : 'the server connected it, and redoes it');
                if (error) {
                    failed.push({ namespace: ns.namespace, error });
                }
                continue;
            }
            for (const room of [...ns[rooms].values()]) {
                const refused = room[byApp] ? await this.#restoreStep(() => this.#rejoin(ns, room.name)) : null;
                if (refused === 'lost') {
                    return null;
                }
                if (!room[byApp] || refused !== null) {
                    ns[rooms].delete(room.name);
                }
                if (refused) {
                    failed.push({ namespace: ns.namespace, room: room.name, error: refused });
                }
            }
        }
        return link === this.#link ? { failed } : null;
    }

    /** Run one restore request: null when it succeeded, 'lost' with the socket, else its error. */
    async #restoreStep(step) {
        try {
            await step();
            return null;
        } catch (err) {
            return err instanceof ConnectionClosedError ? 'lost' : err;
        }
    }

    /** Join `room` of `ns` again (the Room object stays the same). */
    async #rejoin(ns, room) {
        await this.#refusable(
            ns,
            new Message({ Namespace: ns.namespace, Room: room, Event: OnRoomJoin, IsLocal: true }),
        );
        await this[request](new Message({ Namespace: ns.namespace, Room: room, Event: OnRoomJoin }), undefined, true);
        this.#fire(ns, new Message({ Namespace: ns.namespace, Room: room, Event: OnRoomJoined, IsLocal: true }));
    }

    /** Send what was queued while reconnecting, in order (what can no longer go is refused). */
    #flushQueue() {
        const queued = this.#queue;
        this.#queue = [];
        for (const msg of queued) {
            const sent = this.#writable(msg) && this.#send(msg);
            if (!sent && msg.wait) {
                this.#settle(msg.wait, null, this.#refusal(msg));
            }
        }
    }

    #giveUp(err) {
        this.#finish(err, { code: err.code, reason: err.message, byClient: false, error: err });
    }

    /** Closed for good: every waiting promise rejects with `err`, forced events fire once. */
    #finish(err, info) {
        // A kept connection's forced events have not fired yet: they fire now.
        const wasOpen = (this.#state === 'open' || this.#kept !== null) && this.#namespaces.size > 0;
        this.#state = 'closed';
        clearTimeout(this.#retryTimer);
        clearTimeout(this.#keptTimer);
        this.#kept = null;
        this.#recovery = null;
        this.#link = null;
        this.#failPending(err);
        for (const msg of this.#queue) {
            this.#settle(msg.wait, null, err);
        }
        this.#queue = [];
        for (const waiters of this.#serverConnects.values()) {
            waiters.forEach((waiter) => waiter.reject(err));
        }
        this.#serverConnects.clear();
        if (wasOpen) {
            this.#disconnectLocally(true); // else they fired when the connection was lost
        }
        this.#namespaces.clear();
        this.#notify('onClosed', info);
        if (!info.byClient) {
            this.#closed.resolve();
        }
    }

    #failPending(err) {
        for (const token of [...this.#pending.keys()]) {
            const entry = this.#pending.get(token);
            if (this.#state === 'reconnecting' && this.#queue.includes(entry.msg)) {
                continue; // never sent: it goes once the connection is back
            }
            this.#settle(token, null, err);
        }
    }

    #notify(name, info) {
        const callback = this.#options[name];
        if (callback === undefined) {
            return;
        }
        try {
            callback(this, info);
        } catch (err) {
            this.#options.onError(err);
        }
    }
}

// -- NSConn and Room ----------------------------------------------------------------------

/**
 * A connected namespace of a Conn (neffos.js' NSConn). It stays the same object across
 * reconnects.
 */
export class NSConn {
    #rooms = new Map();
    #joining = new Map();

    /** @internal made by Conn.connect */
    constructor(conn, namespace) {
        /** The connection. */
        this.conn = conn;
        /** The namespace name. */
        this.namespace = namespace;
        this[payload] = ''; // the connect request's body, sent again when restoring
    }

    /** The joined rooms by name, in the order joined. */
    get rooms() {
        return new Map(this.#rooms);
    }

    /**
     * The joined room `name`, or undefined.
     * @param {string} name
     * @returns {Room | undefined}
     */
    room(name) {
        return this.#rooms.get(name);
    }

    /** The live room table, for Conn: add, remove, look up. */
    get [rooms]() {
        return this.#rooms;
    }

    /**
     * Send `event` with `body` (a string; bytes go in a binary frame; anything else as
     * JSON). Fire and forget: true when sent or queued (while reconnecting), false when
     * refused (closed, the queue full, the namespace not connected).
     * @param {string} event
     * @param {unknown} [body]
     * @returns {boolean}
     */
    emit(event, body = '') {
        return this.conn[transmit](new Message({ Namespace: this.namespace, Event: event, Body: wireBody(body) }));
    }

    /** {@link NSConn#emit} in a binary frame, whatever the body. */
    emitBinary(event, body = '') {
        return this.conn[transmit](
            new Message({ Namespace: this.namespace, Event: event, Body: wireBody(body), SetBinary: true }),
        );
    }

    /**
     * Send `event` with `body` and resolve with the server's answer (a Message). Rejects
     * with EventError (the server's error text), AskTimeoutError, ConnectionClosedError.
     * @param {string} event
     * @param {unknown} [body]
     * @param {{timeout?: number}} [options] ms (default: the askTimeout dial option)
     * @returns {Promise<Message>}
     */
    ask(event, body = '', { timeout } = {}) {
        const msg = new Message({ Namespace: this.namespace, Event: event, Body: wireBody(body) });
        return this.conn[request](msg, timeout);
    }

    /**
     * Join `room` (once: an ongoing or done join of it gives the same Room). Rejects with
     * EventError when refused (by the local `_OnRoomJoin` handler or the server).
     * @param {string} room
     * @param {{timeout?: number}} [options]
     * @returns {Promise<Room>}
     */
    joinRoom(room, { timeout } = {}) {
        const joined = this.#rooms.get(room);
        if (joined !== undefined) {
            return Promise.resolve(joined);
        }
        let joining = this.#joining.get(room);
        if (joining === undefined) {
            joining = this.conn[join](this, room, timeout).finally(() => this.#joining.delete(room));
            this.#joining.set(room, joining);
        }
        return joining;
    }

    /**
     * Leave every joined room, one at a time in the order joined; rejects with the first
     * refusal (the rooms after it stay joined).
     * @param {{timeout?: number}} [options]
     * @returns {Promise<void>}
     */
    async leaveAll({ timeout } = {}) {
        for (const room of [...this.#rooms.values()]) {
            await room.leave({ timeout });
        }
    }

    /**
     * Disconnect from the namespace: its rooms are left (forced local events), then
     * `_OnNamespaceDisconnect` fires. Rejects with EventError when the server refuses.
     * @param {{timeout?: number}} [options]
     * @returns {Promise<void>}
     */
    disconnect({ timeout } = {}) {
        return this.conn[disconnect](this, timeout);
    }
}

/** A joined room of a namespace (neffos.js' Room). It stays the same object across reconnects. */
export class Room {
    /** @internal */
    constructor(nsConn, name) {
        /** The namespace connection. */
        this.nsConn = nsConn;
        /** The room name. */
        this.name = name;
    }

    #message(event, body, binary = false) {
        return new Message({
            Namespace: this.nsConn.namespace,
            Room: this.name,
            Event: event,
            Body: wireBody(body),
            SetBinary: binary,
        });
    }

    /**
     * Send `event` with `body` to the server, tagged with this room (see NSConn.emit);
     * false once the room is left.
     * @returns {boolean}
     */
    emit(event, body = '') {
        return this.nsConn.conn[transmit](this.#message(event, body));
    }

    /** {@link Room#emit} in a binary frame. */
    emitBinary(event, body = '') {
        return this.nsConn.conn[transmit](this.#message(event, body, true));
    }

    /**
     * An ask tagged with this room (see NSConn.ask).
     * @returns {Promise<Message>}
     */
    ask(event, body = '', { timeout } = {}) {
        return this.nsConn.conn[request](this.#message(event, body), timeout);
    }

    /**
     * Leave the room. Rejects with EventError when refused (the room stays joined).
     * @param {{timeout?: number}} [options]
     * @returns {Promise<void>}
     */
    leave({ timeout } = {}) {
        return this.nsConn.conn[leave](this.nsConn, this.name, timeout);
    }
}

// -- dial ---------------------------------------------------------------------------------

/**
 * Connect to the neffos server at `url` and do the handshake.
 *
 * `url`: `ws(s)://` or `http(s)://`, or relative to the page (`"/chat"`). `namespaces`:
 * `{namespace: {event: (nsConn, msg) => ...}}`. Options (all optional): `headers` (real
 * headers in Node; query parameters in browsers), `protocols`, `WebSocket` (a constructor),
 * `askTimeout` (ms, default 30000: every request's), `dialTimeout` (ms, default 10000),
 * `reconnect` (default on; `false`, a first delay in ms, or `{initialDelay, maxDelay,
 * factor, jitter, maxAttempts}`), `recovery` (default on with reconnect: `false`, or
 * `{window: 120000, maxMessages: 1000, maxBytes: 1048576}`), `queueLimit` (messages kept
 * while reconnecting, 256), and the callbacks `onLost(conn, info)`, `onRestored(conn,
 * info)`, `onClosed(conn, info)`, `onError(err, msg)`.
 *
 * Resolves with the Conn; rejects with RejectError (the server's `on_connect` refused:
 * its reason), ConnectionClosedError (no server, a refused upgrade, no handshake within
 * `dialTimeout`), or TypeError (a bad URL or option).
 * @param {string | URL} url
 * @param {object | Map} namespaces
 * @param {object} [options]
 * @returns {Promise<Conn>}
 */
export async function dial(url, namespaces, options = {}) {
    const conn = new Conn(endpointOf(url), handlerTable(namespaces), normalizeOptions(options));
    await conn[start]();
    return conn;
}
