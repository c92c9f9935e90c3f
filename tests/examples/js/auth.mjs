// neffos.js 0.1.34 clients of examples/auth (namespace "app"):
//
//     node auth.mjs header <ws-url> <token>   the token as a real header (Node, Go clients)
//     node auth.mjs query <ws-url> <token>    as neffos.js sends it from a browser
//     node auth.mjs none <ws-url>             no token at all
//
// "header" reports `ready` once connected, then waits for one `Told` message (sent by the
// test from another client) before it ends.

import { Inbox, errorText, neffos, outcome, report, run, within } from './support.mjs';

// What neffos.js does in a browser with its `headers` option (parseHeadersAsURLParameters).
function asBrowserWould(url, headers) {
    const parts = Object.entries(headers).map(
        ([key, value]) =>
            encodeURIComponent('X-Websocket-Header-' + key) + '=' + encodeURIComponent(value),
    );
    return url + (url.includes('?') ? '&' : '?') + parts.join('&');
}

async function session(conn, told) {
    const ns = await within(conn.connect('app'), 'connect app');
    report('connected', { id: conn.ID });
    const whoami = await within(ns.ask('OnWhoami', ''), 'ask OnWhoami');
    report('whoami', { body: whoami.Body });
    report('join_staff', await outcome(ns.joinRoom('staff').then((room) => room.name), 'join'));
    report('join_general', await outcome(ns.joinRoom('general').then((room) => room.name), 'join'));
    if (told !== null) {
        report('ready');
        const msg = await told.next('Told');
        report('told', { body: msg.Body, namespace: msg.Namespace });
    }
    conn.close();
}

run('auth.mjs header|query|none <ws-url> [token]', 2, async ([mode, url, token]) => {
    const told = new Inbox();
    const events = { app: { Told: (ns, msg) => told.push(msg) } };
    if (mode === 'none') {
        try {
            const conn = await within(neffos.dial(url, events), 'dial');
            report('dial', { resolved: conn.ID });
            conn.close();
        } catch (err) {
            report('dial', { rejected: errorText(err) });
        }
        return;
    }
    const headers = { Authorization: 'Bearer ' + token };
    if (mode === 'header') {
        const conn = await within(neffos.dial(url, events, { headers }), 'dial');
        await session(conn, told);
    } else if (mode === 'query') {
        const conn = await within(neffos.dial(asBrowserWould(url, headers), events), 'dial');
        await session(conn, null);
    } else {
        throw new Error(`unknown mode ${mode}`);
    }
});
