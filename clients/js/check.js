'use strict';
// End-to-end check of the Node client against a running log-server:
// unary calls on both service names with concurrency, then a stream.
// Exits non-zero on any failed call or wrong count.
//
//   node check.js --address 127.0.0.1:4021 --unary 2000 --stream 3000

const { Logger } = require('./logger');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

async function main() {
  const address = arg('address', '127.0.0.1:4021');
  const unary = Number(arg('unary', '2000'));
  const streamed = Number(arg('stream', '3000'));
  const concurrency = Number(arg('concurrency', '32'));
  const bridge = new Logger({ address, loggerName: 'node.check' });
  const legacy = new Logger({ address, loggerName: 'node.check', legacy: true });

  let ok = 0;
  let failed = 0;
  // Unary: `concurrency` calls in flight; even numbers on LogBridge, odd on
  // the legacy LogService name. Each message names its connection (js
  // unary = 0) and number, as the Rust test helpers parse them.
  for (let start = 0; start < unary; start += concurrency) {
    const calls = [];
    for (let n = start; n < Math.min(unary, start + concurrency); n += 1) {
      const logger = n % 2 === 0 ? bridge : legacy;
      calls.push(logger.info(`conn=0 n=${n} from node`, { module: 'check' }).then(
        () => { ok += 1; },
        (err) => { failed += 1; console.error(`unary ${n}: ${err.message}`); },
      ));
    }
    // Unary calls of one batch may be written in any order among
    // themselves; batches are sequential.
    await Promise.all(calls);
  }

  const stream = bridge.openStream();
  for (let n = 0; n < streamed; n += 1) {
    stream.write(bridge.request('WARNING', `conn=1 n=${n} streamed`, { service_name: 'check' }));
  }
  const accepted = await stream.end();
  if (accepted !== streamed) {
    failed += 1;
    console.error(`stream: accepted ${accepted} of ${streamed}`);
  }
  bridge.close();
  legacy.close();
  console.log(`node client: ${ok} unary ok, stream accepted ${accepted}`);
  process.exit(failed === 0 && ok === unary ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
