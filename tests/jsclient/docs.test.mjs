// Runs every ```js block of docs/client-js.md against the guide's own server
// (docs_app.py serves its first Python block; test_node.py sets WSMVC_TEST_URL to it).
//
// A block must be marked `<!-- test: node -->` on the line before it. It runs as an ES
// module in a node of its own (this one's flags), with the page's location set to the
// server (so "/chat" resolves), its imports of "/chat/wsmvc.js" and "./wsmvc.js" made to
// load wsmvc/static/wsmvc.js, and localhost:8080 made the server's address. It must end
// by itself with status 0, and print exactly the lines its `// → text` comments say.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { BASE, usesBuiltin } from './support.mjs';

const GUIDE = new URL('../../docs/client-js.md', import.meta.url);
const CLIENT = new URL('../../wsmvc/static/wsmvc.js', import.meta.url).href;
const MARKER = /^<!--\s*test:\s*node\s*-->$/;
const BLOCK_MS = 20_000;

/** The ```js blocks of the guide: {line (of the first code line), code, marked}. */
function blocks() {
    const lines = readFileSync(GUIDE, 'utf8').split('\n');
    const found = [];
    for (let i = 0; i < lines.length; i++) {
        if (lines[i].trim() !== '```js') continue;
        const before =
            lines
                .slice(0, i)
                .reverse()
                .find((line) => line.trim() !== '') ?? '';
        const end = lines.indexOf('```', i + 1);
        assert.ok(end > i, `docs/client-js.md:${i + 1}: the js block is never closed`);
        found.push({ line: i + 2, code: lines.slice(i + 1, end).join('\n'), marked: MARKER.test(before.trim()) });
        i = end;
    }
    return found;
}

/** The block as the module to run (its lines where they are in the guide). */
function runnable({ line, code }) {
    const host = new URL(BASE).host;
    const body = code
        .replace(/(["'])(?:\/chat|\.)\/wsmvc\.js\1/g, JSON.stringify(CLIENT))
        .replaceAll('localhost:8080', host);
    // Node 18 has no WebSocket: the blocks get the ws package's as theirs.
    const ws = usesBuiltin ? '' : `import { WebSocket as WS } from 'ws'; globalThis.WebSocket = WS; `;
    const prelude = `${ws}globalThis.location = new URL(${JSON.stringify(`${BASE}/`)});`;
    return prelude + '\n'.repeat(line - 1) + body;
}

/** The lines the block says it prints: its `// → text` comments, in order. */
function expectedOutput(code) {
    return [...code.matchAll(/\/\/ → (.*)$/gm)].map((match) => match[1]);
}

const all = blocks();

test('the guide has js blocks, every one marked', () => {
    assert.ok(all.length >= 5, `only ${all.length} js blocks`);
    const unmarked = all.filter((block) => !block.marked).map((block) => `docs/client-js.md:${block.line}`);
    assert.deepEqual(unmarked, [], 'js blocks without <!-- test: node -->');
});

for (const block of all.filter((b) => b.marked)) {
    test(`docs/client-js.md:${block.line} runs and prints what it says`, async () => {
        const args = [...process.execArgv, '--no-warnings', '--input-type=module', '-e', runnable(block)];
        const { stdout } = await new Promise((resolve, reject) => {
            execFile(
                process.execPath,
                args,
                { cwd: fileURLToPath(new URL('.', import.meta.url)), timeout: BLOCK_MS },
                (err, out, errOut) => {
                    if (err) {
                        reject(new Error(`the block failed (${err.signal ?? err.code}):\n${out}\n${errOut}`));
                    } else {
                        resolve({ stdout: out });
                    }
                },
            );
        });
        assert.deepEqual(
            stdout.split('\n').filter((line) => line !== ''),
            expectedOutput(block.code),
        );
    });
}
