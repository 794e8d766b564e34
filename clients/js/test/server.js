'use strict';
// Runs the real log-server binary for the tests: LOG_SERVER_BIN, by default
// the debug build target/debug/log-server that `cargo test` builds, with
// both ports chosen by the kernel, writing JSON lines into a temp directory.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = process.env.LOG_SERVER_BIN || path.join(ROOT, 'target', 'debug', 'log-server');

// Generous bound on anything the tests wait for: a loaded 2-core CI machine
// is slow, never this slow.
const WAIT_MS = 60000;

class Server {
  constructor(extraArgs = []) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'log-server-js-'));
    this.logDir = path.join(this.dir, 'logs');
    this.extraArgs = extraArgs;
    this.tcpPort = 0;
    this.grpcPort = 0;
    this.stderr = '';
  }

  /** Starts the server (again on the same ports after a stop). */
  start() {
    if (!fs.existsSync(BIN)) {
      throw new Error(`no server binary at ${BIN}: run \`cargo build\` or set LOG_SERVER_BIN`);
    }
    const args = ['--port', String(this.tcpPort), '--grpc_port', String(this.grpcPort),
      '--log_dir', this.logDir, '--format', 'json', ...this.extraArgs];
    this.proc = spawn(BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal })));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`log-server did not say it is listening:\n${this.stderr}`)), WAIT_MS);
      let started = false;
      this.proc.stderr.setEncoding('utf8');
      // Keeps reading to the end so that the server never blocks on a full
      // stderr pipe.
      this.proc.stderr.on('data', (chunk) => {
        this.stderr += chunk;
        const m = /listening.*\btcp=127\.0\.0\.1:(\d+) grpc=127\.0\.0\.1:(\d+)/.exec(this.stderr);
        if (m && !started) {
          started = true;
          this.tcpPort = Number(m[1]);
          this.grpcPort = Number(m[2]);
          clearTimeout(timer);
          resolve(this);
        }
      });
      this.proc.on('exit', () => {
        clearTimeout(timer);
        if (!started) reject(new Error(`log-server exited before listening:\n${this.stderr}`));
      });
    });
  }

  get address() {
    return `127.0.0.1:${this.grpcPort}`;
  }

  /** SIGTERM: the server finishes calls in flight, writes everything, exits 0. */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    const { code } = await this.exited;
    if (code !== 0) throw new Error(`log-server exited ${code}:\n${this.stderr}`);
  }

  kill() {
    if (this.proc && this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }

  /** The JSON objects of every line written so far, oldest first. */
  records() {
    if (!fs.existsSync(this.logDir)) return [];
    const names = fs.readdirSync(this.logDir).filter((n) => n.startsWith('_main.log'));
    const order = (n) => (n === '_main.log' ? -1 : Number(n.split('.').pop()));
    names.sort((a, b) => order(b) - order(a));
    const out = [];
    for (const name of names) {
      for (const line of fs.readFileSync(path.join(this.logDir, name), 'utf8').split('\n')) {
        if (line) out.push(JSON.parse(line));
      }
    }
    return out;
  }

  /** Polls the files until `predicate(records)` holds; throws after WAIT_MS. */
  async waitRecords(predicate, what) {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const records = this.records();
      if (predicate(records)) return records;
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${what}; ${records.length} records, last: ${JSON.stringify(records.slice(-3).map((r) => r.message))}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  waitCount(n) {
    return this.waitRecords((r) => r.length >= n, `${n} records`);
  }

  cleanup() {
    this.kill();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Starts a server; the test's `after` hook should call cleanup(). */
async function startServer(extraArgs) {
  const s = new Server(extraArgs);
  await s.start();
  return s;
}

/** A port nothing listens on right now (bound, then released). */
function freePort() {
  const net = require('node:net');
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

module.exports = { startServer, Server, freePort, ROOT, BIN, WAIT_MS };
