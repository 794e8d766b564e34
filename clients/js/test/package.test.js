'use strict';
// The package as a user installs it: `npm install` of this directory into
// an application of its own (packed, so only the files package.json lists
// go in), then pino and winston there send through it to the real server.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { startServer, ROOT, WAIT_MS } = require('./server');

const PACKAGE = path.resolve(__dirname, '..');
const cleanups = [];
after(() => cleanups.forEach((f) => f()));

test('the shipped proto is the server\'s', () => {
  assert.equal(
    fs.readFileSync(path.join(PACKAGE, 'proto', 'log_service.proto'), 'utf8'),
    fs.readFileSync(path.join(ROOT, 'proto', 'log_service.proto'), 'utf8'),
    'clients/js/proto/log_service.proto differs from proto/log_service.proto',
  );
});

test('npm install ./clients/js gives an application createClient, /pino and /winston', async () => {
  const s = await startServer();
  cleanups.push(() => s.cleanup());
  const app = fs.mkdtempSync(path.join(os.tmpdir(), 'log-server-client-app-'));
  cleanups.push(() => fs.rmSync(app, { recursive: true, force: true }));
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  // --install-links: a copy as from a tarball, not a symlink to here, so a
  // file missing from "files" fails this test. The dependencies come from
  // npm's cache (filled by `npm ci` of this package).
  execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--install-links', PACKAGE,
    path.join(PACKAGE, 'node_modules', 'pino'), path.join(PACKAGE, 'node_modules', 'winston')],
  { cwd: app, stdio: 'pipe', timeout: WAIT_MS });
  assert.ok(!fs.lstatSync(path.join(app, 'node_modules', 'log-server-client')).isSymbolicLink());
  fs.writeFileSync(path.join(app, 'main.js'), `
    const { once } = require('node:events');
    const pino = require('pino');
    const winston = require('winston');
    const { createClient } = require('log-server-client');
    const { LogServerTransport } = require('log-server-client/winston');
    const address = process.argv[2];
    (async () => {
      const client = createClient({ address, loggerName: 'app.client' });
      client.log('info', 'from createClient');
      if (!(await client.close())) process.exit(1);
      const w = new LogServerTransport({ address, loggerName: 'app.winston' });
      const logger = winston.createLogger({ transports: [w] });
      logger.error('from winston');
      logger.end();
      await once(logger, 'finish');
      if (w.client.pending() !== 0) process.exit(1);
      // Nothing ends the pino transport: pino does at exit, and its
      // worker sends what is pending before the process is gone.
      const transport = pino.transport({ target: 'log-server-client/pino', options: { address } });
      pino({ name: 'app.pino' }, transport).warn('from pino');
    })();
  `);
  execFileSync(process.execPath, ['main.js', s.address], { cwd: app, stdio: 'pipe', timeout: WAIT_MS });
  const records = await s.waitCount(3);
  assert.deepEqual(records.map((r) => [r.logger_name, r.level, r.message]), [
    ['app.client', 'INFO', 'from createClient'],
    ['app.winston', 'ERROR', 'from winston'],
    ['app.pino', 'WARNING', 'from pino'],
  ]);
});
