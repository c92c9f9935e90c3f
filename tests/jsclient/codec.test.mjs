// The envelope codec against the protocol's test vectors (neffos-protocol.md, section 15),
// without a server.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { wsmvc } from './support.mjs';

const { Message, decode, encode } = wsmvc;

/** The fields of a decoded message that the wire carries. */
function fields(msg) {
    return {
        wait: msg.wait,
        ns: msg.Namespace,
        room: msg.Room,
        event: msg.Event,
        err: msg.Err?.message ?? null,
        noOp: msg.isNoOp,
        body: typeof msg.Body === 'string' ? msg.Body : [...new Uint8Array(msg.Body)],
        binary: msg.SetBinary,
    };
}

const bytes = (...values) => new Uint8Array(values).buffer;
const latin1 = (text) => [...Buffer.from(text, 'latin1')];

test('text frames decode as the protocol says', () => {
    const cases = [
        [';default;;chat;0;0;text', { ns: 'default', event: 'chat', body: 'text' }],
        [';default;;chat;0;0;hello; world\nline2;;', { ns: 'default', event: 'chat', body: 'hello; world\nline2;;' }],
        [';default;;chat;0;0;', { ns: 'default', event: 'chat', body: '' }],
        [';default;;chat;1;0;error message', { ns: 'default', event: 'chat', err: 'error message' }],
        [';;;chat;1;0;many ; delimiters; like that;', { event: 'chat', err: 'many ; delimiters; like that;' }],
        [
            ';contains@%!semicolon@%!semi;@%!semicolon@%!this@%!semicolon@%!for sure@%!semicolon@%!;thatdoesnot;0;0;',
            { ns: 'contains;semi', room: ';this;for sure;', event: 'thatdoesnot' },
        ],
        ['1;default;;chat;0;1;body', { wait: '1', ns: 'default', event: 'chat', noOp: true, body: 'body' }],
        ['$123.456;default;;ping;0;0;x', { wait: '$123.456', ns: 'default', event: 'ping', body: 'x' }],
        [';n;;e;1;0;', { ns: 'n', event: 'e' }], // isError with no text: no error
        ['1;2;3;4;5;6;7;8;9', { wait: '1', ns: '2', room: '3', event: '4', body: '7;8;9' }],
        [';a@%!semicolon@%!b;;e;0;0;x@%!semicolon@%!y', { ns: 'a;b', event: 'e', body: 'x@%!semicolon@%!y' }],
        [';default;;chat;true;01;b', { ns: 'default', event: 'chat', body: 'b' }], // flags are exactly "1"
    ];
    const blank = { wait: '', ns: '', room: '', event: '', err: null, noOp: false, body: '', binary: false };
    for (const [frame, expected] of cases) {
        assert.deepEqual(fields(decode(frame)), { ...blank, ...expected }, frame);
    }
});

test('frames that are not envelopes are ignored, or native where allowed', () => {
    for (const frame of ['default;chat;', '$42;;;;;', 'M', 'Aid', '']) {
        assert.equal(decode(frame), null, frame);
    }
    const native = decode('plain text', true);
    assert.deepEqual(
        [native.Event, native.Body, native.IsNative, native.Namespace],
        [wsmvc.OnNativeMessage, 'plain text', true, ''],
    );
    assert.equal(decode('x;y;z;w;v;u;t', true).Namespace, 'y', 'six separators make an envelope');
});

test('binary frames: the body is raw bytes after the sixth separator', () => {
    const frame = bytes(...Buffer.from(';default;;frombin;0;0;'), 0, 1, 0x3b, 0xfe);
    assert.deepEqual(fields(decode(frame)), {
        wait: '',
        ns: 'default',
        room: '',
        event: 'frombin',
        err: null,
        noOp: false,
        body: [0, 1, 0x3b, 0xfe],
        binary: true,
    });
    const error = decode(bytes(...Buffer.from('$22;default;;fail;1;0;boom ✓')));
    assert.equal(error.Err.message, 'boom ✓', 'a binary error text is decoded, not "[object ArrayBuffer]"');
    assert.equal(decode(bytes(...Buffer.from(';d;;e;0;0'))), null, 'five separators');
    assert.equal(decode(bytes(0xff, ...Buffer.from(';d;;e;0;0;x'))), null, 'a header that is not UTF-8');
});

test('encode writes the seven fields, escaping only names', () => {
    const cases = [
        [{ Namespace: 'default', Event: 'chat', Body: 'text' }, ';default;;chat;0;0;text'],
        [
            { wait: '$1', Namespace: 'default', Room: 'room1', Event: '_OnRoomJoin' },
            '$1;default;room1;_OnRoomJoin;0;0;',
        ],
        [
            { Namespace: 'my;ns', Room: 'r;1', Event: 'ev;1', Body: 'b;o;d;y' },
            ';my@%!semicolon@%!ns;r@%!semicolon@%!1;ev@%!semicolon@%!1;0;0;b;o;d;y',
        ],
        [
            { wait: '7', Namespace: 'd', Event: 'fail', Err: new Error('custom; error\nline2') },
            '7;d;;fail;1;0;custom; error\nline2',
        ],
        [{ Namespace: 'd', Event: 'e', Err: new Error('') }, ';d;;e;1;0;error'], // never an empty error text
        [{ IsNative: true, Event: wsmvc.OnNativeMessage, Body: 'raw;text' }, 'raw;text'],
    ];
    for (const [init, frame] of cases) {
        assert.equal(encode(new Message(init)), frame);
    }
});

test('bytes, or SetBinary, make a binary frame of the same envelope', () => {
    const frame = encode(
        new Message({ Namespace: 'default', Event: 'chat', Body: new Uint8Array([0, 0xff, 0x3b, 0x61]) }),
    );
    assert.ok(frame instanceof Uint8Array);
    assert.deepEqual([...frame], [...latin1(';default;;chat;0;0;'), 0, 0xff, 0x3b, 0x61]);
    const text = encode(new Message({ Namespace: 'd', Event: 'e', Body: 'é', SetBinary: true }));
    assert.deepEqual([...text], [...latin1(';d;;e;0;0;'), 0xc3, 0xa9]);
    const decoded = decode(frame.buffer);
    assert.deepEqual([...decoded.bytes], [0, 0xff, 0x3b, 0x61]);
});

test('Message helpers: text, bytes, unmarshal, marshal, isSystemEvent', () => {
    const msg = new Message({ Body: '{"a":[1,2]}' });
    assert.deepEqual(msg.unmarshal(), { a: [1, 2] });
    assert.deepEqual([...new Message({ Body: 'é' }).bytes], [0xc3, 0xa9]);
    assert.equal(new Message({ Body: bytes(0xc3, 0xa9) }).text, 'é');
    assert.equal(wsmvc.marshal({ a: 1 }), '{"a":1}');
    assert.equal(wsmvc.isSystemEvent(wsmvc.OnRoomLeft), true);
    assert.equal(wsmvc.isSystemEvent(wsmvc.OnAnyEvent), false);
    assert.equal(new Message().isError, false);
});
