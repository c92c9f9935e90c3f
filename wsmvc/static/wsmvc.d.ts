/**
 * TypeScript declarations of wsmvc.js, the JavaScript client of wsmvc (the neffos wire
 * protocol). The guide: docs/client-js.md. Served next to the client:
 * `<mount path>/wsmvc.d.ts`.
 */

/** Fired locally before a namespace connect (may refuse); also the server's connect request. */
export const OnNamespaceConnect: '_OnNamespaceConnect';
/** Fired once a namespace is connected (again after a reconnect). */
export const OnNamespaceConnected: '_OnNamespaceConnected';
/** Fired when a namespace is disconnected (`IsForced` when the connection went). */
export const OnNamespaceDisconnect: '_OnNamespaceDisconnect';
/** Fired before a room join (may refuse); also the server's join request. */
export const OnRoomJoin: '_OnRoomJoin';
/** Fired once a room is joined (again after a reconnect). */
export const OnRoomJoined: '_OnRoomJoined';
/** Fired before a room leave; also the server's leave request. */
export const OnRoomLeave: '_OnRoomLeave';
/** Fired once a room is left (`IsForced` when the connection went). */
export const OnRoomLeft: '_OnRoomLeft';
/** The handler key for the events of a namespace that have no handler of their own. */
export const OnAnyEvent: '_OnAnyEvent';
/** The handler key of native messages (frames without envelope), in namespace "". */
export const OnNativeMessage: '_OnNativeMessage';
/** The query parameter prefix that carries `headers` in browsers. */
export const URLParamAsHeaderPrefix: 'X-Websocket-Header-';

/** Whether `event` is one of the seven system events (connect ... left). */
export function isSystemEvent(event: string): boolean;
/** Whether `err` says the connection closed (a ConnectionClosedError). */
export function isCloseError(err: unknown): err is ConnectionClosedError;
/** JSON text of `obj` (neffos.js' marshal). */
export function marshal(obj: unknown): string;

/** What a body may be: a string (text frame), bytes (binary frame), or anything JSON. */
export type Body = string | ArrayBuffer | ArrayBufferView | object | number | boolean | null | undefined;

/** A handler's explicit answer, made by {@link reply}. */
export interface Reply {
    readonly body: Body;
}

/** Answer the message being handled with `body` (same event, same token). */
export function reply(body: Body): Reply;

/** The peer answered with an error (a refusal, or a failed ask); `message` is its text. */
export class EventError extends Error {
    constructor(text: string, msg?: Message);
    readonly name: 'EventError';
    /** The error answer as received; undefined for a local refusal. */
    readonly msg: Message | undefined;
}

/** The server refused the connection in its handshake; `message` is its reason. */
export class RejectError extends Error {
    constructor(reason: string);
    readonly name: 'RejectError';
    readonly reason: string;
}

/** A request got no answer within `timeout` ms. */
export class AskTimeoutError extends Error {
    constructor(what: string, timeout: number);
    readonly name: 'AskTimeoutError';
    readonly timeout: number;
}

/** The connection closed, was lost, or could not open before the operation ended. */
export class ConnectionClosedError extends Error {
    constructor(message: string, code?: number, reason?: string);
    readonly name: 'ConnectionClosedError';
    /** The websocket close code, when there was one. */
    readonly code: number | undefined;
    readonly reason: string;
}

/** One neffos message, with neffos.js' field names. */
export class Message {
    constructor(fields?: Partial<MessageFields>);
    /** The request token ("" for fire-and-forget). */
    wait: string;
    Namespace: string;
    Room: string;
    Event: string;
    /** A string for a text frame, an ArrayBuffer for a binary one (as neffos.js). */
    Body: string | ArrayBuffer | ArrayBufferView;
    /** Set when the message carries an error (its text: `Err.message`). */
    Err: Error | undefined;
    isNoOp: boolean;
    /** Forced: the connection or the namespace went, nobody asked. */
    IsForced: boolean;
    /** Fired by this side itself, not received. */
    IsLocal: boolean;
    /** A native message (a frame without envelope): only Body is set. */
    IsNative: boolean;
    /** Sent or received in a binary frame. */
    SetBinary: boolean;
    /** Whether `Err` is set. */
    readonly isError: boolean;
    /** The body as a string (binary bodies decoded as UTF-8, leniently). */
    readonly text: string;
    /** The body as bytes (strings encoded as UTF-8). */
    readonly bytes: Uint8Array;
    /** The body parsed as JSON. */
    unmarshal(): any;
}

/** The settable fields of a Message. */
export interface MessageFields {
    wait: string;
    Namespace: string;
    Room: string;
    Event: string;
    Body: string | ArrayBuffer | ArrayBufferView;
    Err: Error | undefined;
    isNoOp: boolean;
    IsForced: boolean;
    IsLocal: boolean;
    IsNative: boolean;
    SetBinary: boolean;
}

/** The frame of a message: a string (text frame) or bytes (binary frame). */
export function encode(msg: Message): string | Uint8Array;
/** The message in a frame, or null when it is not an envelope (a native message with `native`). */
export function decode(data: string | ArrayBuffer, native?: boolean): Message | null;

/**
 * An event handler. Its result: nothing; `reply(body)` or an Error (sent back, as
 * neffos.js); and when the server asked (the message has a token) any other value
 * answers it (strings, bytes, else JSON). A thrown error answers a server ask with its
 * text; for other messages it goes to `onError`. A Promise is awaited.
 */
export type Handler = (nsConn: NSConn, msg: Message) => unknown;
/** Event name -> handler, for one namespace. */
export type Events = Record<string, Handler> | Map<string, Handler>;
/** Namespace -> its events (or, as neffos.js allows, events alone for namespace ""). */
export type Namespaces = Record<string, Events> | Map<string, Events> | Record<string, Handler>;

/** The reconnect policy (all ms but `factor`, `jitter` and `maxAttempts`). */
export interface ReconnectOptions {
    /** The wait before the first attempt (default 500). */
    initialDelay?: number;
    /** The longest wait (default 10000). */
    maxDelay?: number;
    /** Each wait is the previous one times this (default 2). */
    factor?: number;
    /** 0..1: up to this share of each wait is taken off at random (default 0.5). */
    jitter?: number;
    /** Give up after this many attempts (default Infinity). */
    maxAttempts?: number;
}

/**
 * Connection state recovery (docs/recovery.md): with a server that offers it, a connection
 * lost without a close frame is kept, and comes back the same (nothing lost either way).
 */
export interface RecoveryOptions {
    /** ms the page keeps a lost connection for its return (default 120000, as the server's). */
    window?: number;
    /** Frames sent kept to send again what the server missed (default 1000). */
    maxMessages?: number;
    /** Their size: bytes of binary frames, characters of text ones (default 1048576). */
    maxBytes?: number;
}

/** What `onLost` gets. */
export interface LostInfo {
    code: number;
    reason: string;
    /** Whether a reconnect follows. */
    reconnecting: boolean;
}

/** What `onRestored` gets. */
export interface RestoredInfo {
    /** The server recovered the connection: the same id, namespaces, rooms, nothing lost. */
    recovered: boolean;
    /** The id the connection had before (`conn.id` is the new one, or the same if recovered). */
    previousId: string;
    /** The attempt that succeeded (1 first). */
    attempts: number;
    /** What could not be restored (refused by the server or a local handler, or no answer). */
    failed: { namespace: string; room?: string; error: Error }[];
}

/** What `onClosed` gets: the connection is over for good. */
export interface ClosedInfo {
    code: number | undefined;
    reason: string;
    /** `close()` was called. */
    byClient: boolean;
    /** Why reconnecting stopped (a RejectError, or the attempts ran out). */
    error?: Error;
}

/** The options of {@link dial}. */
export interface DialOptions {
    /** Headers of the upgrade request: real headers in Node, query parameters in browsers. */
    headers?: Record<string, string>;
    /** Websocket subprotocols to offer. */
    protocols?: string | string[];
    /** The WebSocket constructor (default: globalThis.WebSocket), e.g. the ws package's. */
    WebSocket?: any;
    /** Every request's timeout, ms (default 30000). */
    askTimeout?: number;
    /** The opening and handshake timeout, ms (default 10000). */
    dialTimeout?: number;
    /** Reconnecting: true (default), false, the first delay in ms, or a policy. */
    reconnect?: boolean | number | ReconnectOptions;
    /** Ask for recovery when reconnecting: true (default), false, or its bounds. */
    recovery?: boolean | RecoveryOptions;
    /** Messages kept while reconnecting (default 256; 0: refuse them). */
    queueLimit?: number;
    /** The connection was lost (a reconnect may follow). */
    onLost?: (conn: Conn, info: LostInfo) => void;
    /** The connection is back, its namespaces and rooms restored. */
    onRestored?: (conn: Conn, info: RestoredInfo) => void;
    /** The connection is over for good. */
    onClosed?: (conn: Conn, info: ClosedInfo) => void;
    /** An error a handler or callback threw where nobody awaits it (default: console.error). */
    onError?: (err: unknown, msg?: Message) => void;
}

/** A request's options. */
export interface RequestOptions {
    /** ms (default: the askTimeout dial option; Infinity: none). */
    timeout?: number;
}

/**
 * Connect to a neffos server and do the handshake. Rejects with RejectError (the server
 * refused), ConnectionClosedError (no server, refused upgrade, no handshake in time), or
 * TypeError (a bad URL or option).
 */
export function dial(url: string | URL, namespaces: Namespaces, options?: DialOptions): Promise<Conn>;

/** A connection made by {@link dial}. */
export class Conn {
    private constructor();
    /** The id the server gave; a new one after each reconnect that was not a recovery. */
    readonly id: string;
    /** The same, neffos.js' name. */
    readonly ID: string;
    /** The reconnect attempt that made the current socket (0: the first dial). */
    readonly reconnectTries: number;
    /** How many times the connection was restored. */
    readonly reconnects: number;
    readonly state: 'open' | 'reconnecting' | 'closed';
    /** Closed for good. */
    readonly closed: boolean;
    /** The connected namespaces, in the order connected. */
    readonly namespaces: ReadonlyMap<string, NSConn>;
    isClosed(): boolean;
    wasReconnected(): boolean;
    namespace(name: string): NSConn | undefined;
    /** Connect to a namespace declared in dial's handlers (EventError when refused). */
    connect(namespace: string, payload?: Body, options?: RequestOptions): Promise<NSConn>;
    /** Resolves once the server connected this client to `namespace`. */
    waitServerConnect(namespace: string): Promise<NSConn>;
    /** Send a Message as a request; resolves with the answer. */
    ask(msg: Message | Partial<MessageFields>, options?: RequestOptions): Promise<Message>;
    /** Send a Message as it is; false when refused. */
    write(msg: Message | Partial<MessageFields>): boolean;
    /** Close for good; resolves once the socket closed. */
    close(code?: number, reason?: string): Promise<void>;
}

/** A connected namespace; the same object across reconnects. */
export class NSConn {
    private constructor();
    readonly conn: Conn;
    readonly namespace: string;
    /** The joined rooms, in the order joined. */
    readonly rooms: ReadonlyMap<string, Room>;
    room(name: string): Room | undefined;
    /** Fire and forget: true when sent or queued, false when refused. */
    emit(event: string, body?: Body): boolean;
    /** emit in a binary frame. */
    emitBinary(event: string, body?: Body): boolean;
    /** Resolves with the answer; EventError, AskTimeoutError, ConnectionClosedError. */
    ask(event: string, body?: Body, options?: RequestOptions): Promise<Message>;
    joinRoom(room: string, options?: RequestOptions): Promise<Room>;
    /** Leave every room, one at a time, in the order joined. */
    leaveAll(options?: RequestOptions): Promise<void>;
    disconnect(options?: RequestOptions): Promise<void>;
}

/** A joined room; the same object across reconnects. */
export class Room {
    private constructor();
    readonly nsConn: NSConn;
    readonly name: string;
    emit(event: string, body?: Body): boolean;
    emitBinary(event: string, body?: Body): boolean;
    ask(event: string, body?: Body, options?: RequestOptions): Promise<Message>;
    leave(options?: RequestOptions): Promise<void>;
}
