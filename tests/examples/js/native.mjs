// A plain `ws` client (no neffos.js) of examples/native, as a browser's WebSocket would be:
//
//     node native.mjs <ws-url> <name>
//
// Reports its first frame (`welcome`), then `ready`; reports the next text frame (sent by
// the test from another client), asks `/who` and reports the answer, sends a binary frame
// [0, 1, 2, 255] and closes.

import { Inbox, WebSocket, report, run, within } from './support.mjs';

run('native.mjs <ws-url> <name>', 2, async ([url, name]) => {
    const frames = new Inbox();
    const ws = new WebSocket(`${url}?name=${encodeURIComponent(name)}`);
    ws.binaryType = 'arraybuffer';
    ws.on('message', (data, isBinary) => frames.push(isBinary ? Array.from(new Uint8Array(data)) : data.toString()));
    const closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
    await within(new Promise((resolve, reject) => {
        ws.on('open', resolve);
        ws.on('error', reject);
    }), 'open');
    report('welcome', { frame: await frames.next('welcome') });
    report('ready');
    report('text', { frame: await frames.next('a text frame') });
    ws.send('/who');
    report('who', { frame: await frames.next('the answer to /who') });
    ws.send(new Uint8Array([0, 1, 2, 255]));
    ws.close(1000);
    report('closed', { code: await within(closed, 'close') });
});
