// Dialing: the handshake, its refusals and failures, URLs, headers and options.

import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { test } from 'node:test';

import { WebSocket as WsPackage } from 'ws';

import { api, endpoint, options, usesBuiltin, within, wsmvc } from './support.mjs';

test('dial resolves once the server acknowledged, with the id the server gave', async () => {
    const conn = await within(wsmvc.dial(endpoint(), { default: {} }, options()), 'dial');
    try {
        assert.match(conn.id, /^[0-9a-f-]{36}$/);
        assert.equal(conn.ID, conn.id);
        assert.equal(conn.state, 'open');
        assert.equal(conn.isClosed(), false);
        assert.equal(conn.wasReconnected(), false);
        assert.deepEqual(await api(`/namespaces?id=${conn.id}`), []);
    } finally {
        await conn.close();
    }
    assert.equal(conn.isClosed(), true);
});

test("dial rejects with the server's reason when on_connect refuses", async () => {
    const refused = wsmvc.dial(endpoint(), { default: {} }, options({ headers: { 'X-Reject': 'not you; go away' } }));
    await assert.rejects(refused, (err) => {
        assert.ok(err instanceof wsmvc.RejectError);
        assert.equal(err.name, 'RejectError');
        assert.equal(err.message, 'not you; go away');
        assert.equal(err.reason, 'not you; go away');
        return true;
    });
});

test('dial rejects with ConnectionClosedError when nothing listens', async () => {
    const port = await closedPort();
    await assert.rejects(
        wsmvc.dial(`ws://127.0.0.1:${port}/ws`, { default: {} }, options({ reconnect: false })),
        (err) => err instanceof wsmvc.ConnectionClosedError && err.message.includes(`ws://127.0.0.1:${port}/ws`),
    );
});

test('dial rejects when the upgrade is refused (503), naming the endpoint', async () => {
    const tag = 'refused-upgrade';
    await api(`/hold?client=${tag}`, 'POST');
    try {
        await assert.rejects(wsmvc.dial(endpoint(tag), { default: {} }, options()), (err) => {
            assert.equal(err.name, 'ConnectionClosedError');
            assert.match(err.message, /could not connect to ws:\/\/127\.0\.0\.1:\d+\/ws\?client=refused-upgrade/);
            return true;
        });
    } finally {
        await api(`/release?client=${tag}`, 'POST');
    }
});

test('dial rejects within dialTimeout when the peer never acknowledges', async () => {
    // A websocket server that accepts the upgrade and never answers neffos' M.
    const { WebSocketServer } = await import('ws');
    const silent = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((resolve) => silent.once('listening', resolve));
    try {
        const started = Date.now();
        await assert.rejects(
            wsmvc.dial(`ws://127.0.0.1:${silent.address().port}/`, { default: {} }, options({ dialTimeout: 300 })),
            (err) => err instanceof wsmvc.ConnectionClosedError && /no handshake .* within 300 ms/.test(err.message),
        );
        assert.ok(Date.now() - started < 3000);
    } finally {
        for (const client of silent.clients) client.terminate();
        await new Promise((resolve) => silent.close(resolve));
    }
});

test('an http(s) URL becomes ws(s); a relative one needs a page', async () => {
    const conn = await wsmvc.dial(endpoint().replace(/^ws/, 'http'), { default: {} }, options());
    await conn.close();
    await assert.rejects(async () => wsmvc.dial('/ws', {}, options()), /outside a page the URL must be absolute/);
    await assert.rejects(async () => wsmvc.dial('ftp://127.0.0.1/ws', {}, options()), /not a ws\(s\) or http\(s\) URL/);
});

test('wrong options are a TypeError naming the option', async () => {
    await assert.rejects(async () => wsmvc.dial(endpoint(), {}, options({ askTimeout: -1 })), /askTimeout/);
    await assert.rejects(async () => wsmvc.dial(endpoint(), {}, options({ reconnect: { jitter: 2 } })), /reconnect/);
    await assert.rejects(async () => wsmvc.dial(endpoint(), {}, options({ onLost: 'no' })), /onLost/);
    await assert.rejects(async () => wsmvc.dial(endpoint(), {}, options({ queueLimit: 1.5 })), /queueLimit/);
    await assert.rejects(async () => wsmvc.dial(endpoint(), { default: { chat: 1 } }, options()), /"chat"/);
});

test('headers reach the server as headers, with the ws package too', async () => {
    for (const WebSocket of [WsPackage, ...(usesBuiltin ? [globalThis.WebSocket] : [])]) {
        const conn = await wsmvc.dial(endpoint(), { default: {} }, { WebSocket, headers: { 'X-Name': 'ann' } });
        try {
            assert.deepEqual(await api(`/upgrade?id=${conn.id}`), { name: 'ann', reconnect: 0 });
        } finally {
            await conn.close();
        }
    }
});

test('close() resolves once the socket closed, and settles with code and reason', async () => {
    const closed = [];
    const conn = await wsmvc.dial(endpoint(), { default: {} }, options({ onClosed: (c, info) => closed.push(info) }));
    await within(conn.close(4001, 'bye'), 'close');
    assert.deepEqual(closed, [{ code: 4001, reason: 'bye', byClient: true }]);
    await conn.close(); // again: nothing more
    assert.equal(closed.length, 1);
    assert.equal(conn.namespace('default'), undefined);
    assert.equal(conn.write(new wsmvc.Message({ Namespace: 'default', Event: 'echo' })), false);
});

/** A TCP port nothing listens on (it was free a moment ago). */
async function closedPort() {
    const server = createServer();
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address();
    await new Promise((resolve) => server.close(resolve));
    return port;
}
