'use strict';
// A grpc-js server that implements LogBridge and does nothing with the
// messages: the ceiling of a Node client measured against it in the same
// run as log-server (scripts/bench-node-grpc.sh). Prints its address.
//
//   node bench/noop-server.js [--port 0]

const grpc = require('@grpc/grpc-js');
const { loadService } = require('../logger');

const port = process.argv[2] === '--port' ? Number(process.argv[3]) : 0;
const service = loadService();
const server = new grpc.Server();
server.addService(service.LogBridge.service, {
  LogMessage: (_call, callback) => callback(null, { success: true }),
  LogStream: (call, callback) => {
    let accepted = 0;
    call.on('data', () => { accepted += 1; });
    call.on('end', () => callback(null, { accepted }));
    call.on('error', () => {});
  },
});
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
  if (err) {
    console.error(`noop-server: ${err.message}`);
    process.exit(1);
  }
  console.log(`127.0.0.1:${bound}`);
});
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
