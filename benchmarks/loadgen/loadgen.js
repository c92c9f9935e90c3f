'use strict';
// The load generator: `node loadgen.js '<json config>'`.
//
// Config: {scenario: "echo"|"broadcast"|"connect"|"di-connect"|"exchange-broadcast",
// proto: "neffos"|"socketio", url, urls, ...} plus the scenario's own keys (see scenarios.js).
// It talks to the runner over stdio, one line each:
//   stdout "MARK <name>"   the load is quiescent; the runner snapshots the server, then
//   stdin  "<anything>"    lets the load generator go on;
//   stdout "RESULT <json>" the measurements, last line; then it exits.

const readline = require('readline');
const scenarios = require('./scenarios');

const WATCHDOG_MS = 300000;

async function main() {
  const cfg = JSON.parse(process.argv[2]);
  const scenario = scenarios[cfg.scenario];
  if (scenario === undefined) throw new Error(`unknown scenario ${cfg.scenario}`);
  const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const mark = async (name) => {
    process.stdout.write(`MARK ${name}\n`);
    if ((await lines.next()).done) throw new Error('runner went away');
  };
  const result = await scenario(cfg, mark);
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`, () => process.exit(0));
}

setTimeout(() => {
  process.stderr.write('loadgen: watchdog expired\n');
  process.exit(3);
}, WATCHDOG_MS).unref();

main().catch((err) => {
  process.stderr.write(`loadgen: ${err.stack || err}\n`);
  process.exit(1);
});
