// Recovery across servers (docs/recovery.md, "Across servers"): a page whose connection to
// server a of a cluster is reset (no close frame) while both servers broadcast to its room
// comes back through the balancer to server b, which takes the connection over: the same
// id, every message once, in order per sending server; its notes reached a server once.
//
// Runs against across_app.py (test_node.py starts it with a broker): GET /info gives the
// balancer's websocket URL; POST /stream broadcasts numbered messages from both servers and
// resets the connection in the middle, routing new ones to b.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Inbox, QUICK_RECONNECT, api, newTag, options, within, wsmvc } from './support.mjs';

const FORCED = [wsmvc.OnRoomLeft, wsmvc.OnNamespaceDisconnect];
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

test('1000 messages across a reset, back on the other server of the cluster', async () => {
    const { ws } = await api('/info');
    const inbox = new Inbox();
    const got = [];
    const conn = await wsmvc.dial(
        ws,
        {
            default: {
                ...inbox.handlers(...FORCED),
                n: (ns, msg) => {
                    got.push(Number(msg.Body));
                    ns.emit('note', msg.Body); // both ways busy at the loss
                    if (got.length === 1000) {
                        inbox.put('all', got);
                    }
                },
            },
        },
        options({
            reconnect: QUICK_RECONNECT,
            onLost: (c, info) => inbox.put('lost', info),
            onRestored: (c, info) => inbox.put('restored', info),
        }),
    );
    try {
        const ns = await conn.connect('default');
        const room = `r-${newTag()}`;
        await ns.joinRoom(room);
        const firstId = conn.id;
        const streamed = api(`/stream?room=${room}&count=1000&kill=310`, 'POST');

        assert.deepEqual(await inbox.next('lost'), { code: 1006, reason: '', reconnecting: true });
        const restored = await inbox.next('restored');
        assert.deepEqual(restored, { failed: [], recovered: true, previousId: firstId, attempts: 1 });
        await within(streamed, 'the stream');
        const all = await inbox.next('all');
        // Once each; in order per sending server (across servers there is no order to keep).
        assert.deepEqual([...all].sort((x, y) => x - y), range(1, 1000));
        assert.deepEqual(
            all.filter((n) => n % 2 === 1),
            range(1, 1000).filter((n) => n % 2 === 1),
        );
        assert.deepEqual(
            all.filter((n) => n % 2 === 0),
            range(1, 1000).filter((n) => n % 2 === 0),
        );
        assert.equal(conn.id, firstId);
        assert.equal(conn.state, 'open');
        assert.equal((await ns.ask('ask', 'after')).Body, 'pong:after from b');
        for (const event of FORCED) {
            assert.equal(inbox.pending(event), 0, `${event} fired`);
        }
        assert.deepEqual(await api(`/where?id=${firstId}`), { a: 0, b: 1 });
        assert.equal(await api(`/gone?id=${firstId}&server=a`), 'moved to another server');

        // The page's notes (one per message, in the order it got them; handled on b before
        // the ask) reached a server once each, in order: a got the first ones (none when
        // the page read nothing before the reset), b the rest.
        const notes = await api(`/notes?id=${firstId}`);
        assert.deepEqual([...notes.a, ...notes.b].map(Number), all);
    } finally {
        await conn.close(); // else its reconnecting keeps node running
    }
});
