'use strict';

// Client for notify_ext on pg (node-postgres):
// - Consumer drains a stream consumer: fetch, hand the batch to the caller,
//   acknowledge when the caller's handler resolves; wakes up on LISTEN and
//   reconnects after a server restart.
// - Inbox yields a principal's notifications live and marks them read.

const { Backoff } = require('./lib/backoff');
const { Consumer, Message } = require('./lib/consumer');
const { Inbox, Notification } = require('./lib/inbox');
const { isConnectionLost } = require('./lib/client');

module.exports = { Backoff, Consumer, Message, Inbox, Notification, isConnectionLost };
