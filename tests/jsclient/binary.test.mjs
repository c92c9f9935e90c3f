// Binary bodies both ways, and native messages (a native-only server).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Inbox, WS_BASE, endpoint, options, recordingWebSocket, wsmvc } from './support.mjs';

const inbox = new Inbox();
const log = [];
let conn;
let ns;

before(async () => {
    conn = await wsmvc.dial(
        endpoint(),
        { default: { ...inbox.handlers('bin', 'echo'), question: (n, msg) => msg.bytes.reverse() } },
        options({ WebSocket: recordingWebSocket(log) }),
    );
    ns = await conn.connect('default');
});

after(() => conn.close());

test('bytes go in a binary frame, and the answer to it comes back binary', async () => {
    const body = new Uint8Array([0, 1, 0x3b, 0xfe, 0xff]);
    const reply = await ns.ask('reverse', body);
    assert.equal(reply.SetBinary, true);
    assert.ok(reply.Body instanceof ArrayBuffer, 'a binary body is an ArrayBuffer, as in neffos.js');
    assert.deepEqual([...reply.bytes], [0xff, 0xfe, 0x3b, 1, 0]);
    const sent = log.find(([dir, frame]) => dir === 'out' && frame.includes(';reverse;'));
    assert.equal(sent[2], true, 'the ask went in a binary frame');
    // An ArrayBuffer, a DataView, a Node Buffer: bytes all the same.
    for (const bytes of [body.buffer, new DataView(body.buffer, 1, 2), Buffer.from([7, 8])]) {
        const expected = [...new Uint8Array(bytes.buffer ?? bytes, bytes.byteOffset ?? 0, bytes.byteLength)].reverse();
        assert.deepEqual([...(await ns.ask('reverse', bytes)).bytes], expected);
    }
});

test('bytes the server sends that are not UTF-8 arrive whole, in a binary frame', async () => {
    const reply = await ns.ask('nonutf8');
    assert.equal(reply.SetBinary, true);
    assert.deepEqual([...reply.bytes], [0xff, 0xfe, 0x00]);
    assert.equal(reply.text, '\ufffd\ufffd\u0000', 'text decodes leniently');
});

test("the server's binary emit reaches the handler with its bytes, separators included", async () => {
    ns.emit('push_binary');
    const msg = await inbox.next('bin');
    assert.equal(msg.SetBinary, true);
    assert.deepEqual([...new Uint8Array(msg.Body)], [0, 1, 0x3b, 0xfe]);
});

test('emitBinary sends a string as a binary frame; UTF-8 text survives both ways', async () => {
    ns.emitBinary('echo', 'héllo ✓');
    const back = await inbox.next('echo');
    assert.equal(back.text, 'héllo ✓');
    const sent = log.filter(([dir, frame]) => dir === 'out' && frame.includes(';echo;'));
    assert.deepEqual(sent.at(-1), ['out', `;default;;echo;0;0;${Buffer.from('héllo ✓').toString('latin1')}`, true]);
    ns.emit('echo', 'héllo ✓ 😀');
    const text = await inbox.next('echo');
    assert.equal(text.SetBinary, false);
    assert.equal(text.Body, 'héllo ✓ 😀');
});

test("a handler returning bytes answers the server's ask with them (a binary frame)", async () => {
    const reply = await ns.ask('server_ask', new Uint8Array([1, 2, 3]));
    assert.deepEqual([...reply.bytes], [...new TextEncoder().encode('client said:'), 3, 2, 1]);
});

test('a native-only server: frames without envelope both ways, no handshake', async () => {
    const native = new Inbox();
    const raw = await wsmvc.dial(`${WS_BASE}/native`, { '': native.handlers(wsmvc.OnNativeMessage) }, options());
    try {
        assert.equal(raw.id, '');
        const nsRaw = raw.namespace('');
        assert.ok(nsRaw, 'connected to namespace "" at once');
        assert.equal(nsRaw.emit(wsmvc.OnNativeMessage, 'hello; with;;;;;; semicolons'), true);
        const msg = await native.next(wsmvc.OnNativeMessage);
        assert.equal(msg.IsNative, true);
        assert.equal(msg.Body, 'echo:hello; with;;;;;; semicolons');
        nsRaw.emit(wsmvc.OnNativeMessage, new Uint8Array([0, 255]));
        const bin = await native.next(wsmvc.OnNativeMessage);
        assert.equal(bin.SetBinary, true);
        assert.deepEqual([...bin.bytes], [...new TextEncoder().encode('echo:'), 0, 255]);
    } finally {
        await raw.close();
    }
});

test('mixed mode: native frames in namespace "", envelopes elsewhere', async () => {
    const inbox = new Inbox();
    const conn = await wsmvc.dial(
        `${WS_BASE}/mixed`,
        { '': inbox.handlers(wsmvc.OnNativeMessage), default: {} },
        options(),
    );
    try {
        assert.notEqual(conn.id, '', 'a handshake, unlike native-only');
        const raw = await conn.connect('');
        const ns = await conn.connect('default');
        assert.equal(raw.emit(wsmvc.OnNativeMessage, 'plain'), true);
        const msg = await inbox.next(wsmvc.OnNativeMessage);
        assert.deepEqual([msg.IsNative, msg.Namespace, msg.Body], [true, '', 'echo:plain']);
        assert.equal((await ns.ask('ask', 'x')).Body, 'pong:x');
    } finally {
        await conn.close();
    }
});
