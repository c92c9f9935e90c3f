// A neffos.js 0.1.34 client of examples/server_push (namespace "live"):
//
//     node server_push.mjs <ws-url>
//
// Reports its first three Tick bodies, then `ready` with its id; answers the server's
// Question with neffos.reply(...), reports it, then waits for one Notice and ends.

import { Inbox, neffos, report, run, within } from './support.mjs';

run('server_push.mjs <ws-url>', 1, async ([url]) => {
    const ticks = new Inbox();
    const questions = new Inbox();
    const notices = new Inbox();
    const conn = await within(
        neffos.dial(url, {
            live: {
                Tick: (ns, msg) => ticks.push(JSON.parse(msg.Body)),
                Question: (ns, msg) => {
                    questions.push(msg.Body);
                    // A handler's return value answers the server's ask: reply(...) with a
                    // body (a returned Error would answer with an error).
                    return neffos.reply(`node heard: ${msg.Body}`);
                },
                Notice: (ns, msg) => notices.push(msg.Body),
            },
        }),
        'dial',
    );
    await within(conn.connect('live'), 'connect live');
    const seen = [];
    for (let i = 0; i < 3; i++) {
        seen.push((await ticks.next('Tick')).n);
    }
    report('ticks', { n: seen });
    report('ready', { id: conn.ID });
    report('question', { body: await questions.next('Question') });
    report('notice', { body: await notices.next('Notice') });
    conn.close();
});
