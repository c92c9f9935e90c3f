// Type-checks a page's use of wsmvc.js against wsmvc.d.ts (types.test.mjs runs tsc on it):
// what a page writes compiles; what it must not write is an error (@ts-expect-error).

import {
    AskTimeoutError,
    Conn,
    ConnectionClosedError,
    EventError,
    Message,
    NSConn,
    OnNamespaceConnected,
    OnRoomJoined,
    RejectError,
    Room,
    dial,
    isCloseError,
    reply,
} from '../../../wsmvc/static/wsmvc.js';

export async function page(): Promise<string> {
    const conn: Conn = await dial(
        '/chat',
        {
            chat: {
                [OnNamespaceConnected]: (ns: NSConn, msg: Message) => console.log(ns.namespace, msg.IsLocal),
                [OnRoomJoined]: (ns, msg) => console.log(msg.Room),
                OnChat: (ns, msg) => console.log(msg.Body, msg.text, msg.bytes.length),
                question: (ns, msg) => reply(`answer to ${msg.text}`),
            },
        },
        {
            headers: { 'X-Name': 'ann' },
            reconnect: { initialDelay: 250, maxDelay: 5000, jitter: 0.3 },
            recovery: { window: 60_000, maxMessages: 500 },
            askTimeout: 5000,
            onLost: (c, info) => console.log(c.id, info.code, info.reconnecting),
            onRestored: (c, info) =>
                info.recovered || info.failed.forEach((f) => console.log(f.namespace, f.room, f.error.message)),
            onClosed: (c, info) => console.log(info.byClient, info.error?.name),
        },
    );
    const chat: NSConn = await conn.connect('chat', { token: 't' });
    const room: Room = await chat.joinRoom('lobby', { timeout: 1000 });
    const sent: boolean = room.emit('OnChat', 'hi') && chat.emit('OnChat', new Uint8Array([1]));
    try {
        const answer: Message = await chat.ask('ask', 'x', { timeout: 100 });
        return `${answer.text} ${sent} ${conn.state} ${conn.isClosed()} ${chat.rooms.size}`;
    } catch (err) {
        if (err instanceof EventError || err instanceof AskTimeoutError || err instanceof RejectError) {
            return err.message;
        }
        if (isCloseError(err)) {
            const closed: ConnectionClosedError = err;
            return `${closed.code}`;
        }
        throw err;
    } finally {
        await room.leave();
        await conn.close(1000, 'bye');
    }
}

export async function mistakes(conn: Conn): Promise<void> {
    // @ts-expect-error a namespace is a string
    await conn.connect(1);
    // @ts-expect-error the state is one of three words
    const state: 'gone' = conn.state;
    // @ts-expect-error reconnect takes no string
    await dial('/ws', {}, { reconnect: 'yes' });
    // @ts-expect-error recovery's window is a number of ms
    await dial('/ws', {}, { recovery: { window: '2m' } });
    // @ts-expect-error Conn is made by dial, not new
    new Conn();
    void state;
}
