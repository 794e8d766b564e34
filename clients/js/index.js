'use strict';
// log-server-client: the batching client (createClient), and the minimal
// example Logger of logger.js. The pino and winston transports are
// `log-server-client/pino` and `log-server-client/winston`.

const client = require('./client');
const { Logger } = require('./logger');

module.exports = { ...client, Logger };
