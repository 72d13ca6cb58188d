'use strict';

// Draining a stream consumer.

const { BaseClient, STOPPED } = require('./client');

/** One delivery of an event. */
class Message {
  constructor(row) {
    /** The event's position in the log. */
    this.seq = Number(row.seq);
    /** The event JSON: seq, stream, operation, resource, occurred_at, actor, payload, changed. */
    this.event = row.message;
    /** 1 on the first delivery, more on redeliveries. */
    this.deliveryCount = row.delivery_count;
    this.reply = row.reply;
    this.salt = row.salt;
    this.hmac = row.hmac;
  }

  get stream() {
    return this.event.stream;
  }

  get operation() {
    return this.event.operation;
  }

  get payload() {
    return this.event.payload || {};
  }

  get resourceId() {
    return this.event.resource ? this.event.resource.id : null;
  }

  /** The object acknowledge_message_batch() takes for this message. */
  ackToken() {
    return { reply: this.reply, salt: this.salt, hmac: this.hmac };
  }
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Drains a notify_ext stream consumer: fetch a batch, hand it to the
 * caller, acknowledge it after the caller's handler resolves.
 *
 * One connection runs the fetches and acknowledgements; a second one
 * LISTENs on the consumer's channel for wake-ups.  While nothing is there to
 * fetch, the consumer waits for a wake-up and fetches again when woken, or
 * after `pollInterval` ms in any case (that picks up redeliveries, which
 * send no wake-up).  With `listen: false` it long-polls instead: the fetch
 * itself waits on the server.
 *
 * Delivery is at least once.  A handler that throws leaves its batch
 * unacknowledged (the server hands it out again after the consumer's
 * ack_wait), and run() rejects with its error.  When the server goes away
 * the consumer reconnects with capped, jittered exponential backoff, and
 * first acknowledges what was handled before the connection was lost.
 */
class Consumer extends BaseClient {
  constructor(options) {
    super(options, 'consumer');
    const { consumer, batchSize = 100, pollInterval = 10000 } = options;
    if (typeof consumer !== 'string' || !UUID_RE.test(consumer)) {
      throw new TypeError(`options.consumer must be a consumer id (a uuid), not ${JSON.stringify(consumer)}`);
    }
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10000) {
      throw new RangeError(`batchSize must be an integer between 1 and 10000, not ${batchSize}`);
    }
    if (!(pollInterval > 0)) throw new RangeError(`pollInterval must be positive, not ${pollInterval}`);
    this.consumerId = consumer.toLowerCase();
    this.batchSize = batchSize;
    this.pollInterval = pollInterval;
    this._unacked = []; // replies of a handled batch not yet acknowledged
    this._announced = 0; // the highest seq a wake-up announced
    this._fetched = 0; // the highest seq fetched
    this._longPolling = null; // the connection running a long poll
  }

  _describe() {
    return `consumer ${this.consumerId}`;
  }

  /**
   * Hands each batch (an array of Message, in seq order, redeliveries
   * first) to handler and acknowledges it when handler resolves.  Resolves
   * after stop(), or with `untilIdle` as soon as a fetch comes back empty.
   */
  run(handler, { untilIdle = false } = {}) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    return this._loop(async () => {
      while (!this._stopping) {
        const batch = await this._withReconnect(() => this._nextBatch());
        if (batch === STOPPED) break;
        if (batch.length > 0) {
          await handler(batch);
          this._unacked = batch.map((m) => m.ackToken());
          await this._withReconnect(() => this._flushAcks());
        } else if (untilIdle) {
          break;
        } else {
          await this._withReconnect(() => this._idle());
        }
      }
    });
  }

  /** Handles everything there is now, then resolves. */
  drain(handler) {
    return this.run(handler, { untilIdle: true });
  }

  /** One batch, not acknowledged (see acknowledge()). */
  async fetch({ wait = 0 } = {}) {
    const batch = await this._loop(() => this._withReconnect(() => this._fetch(wait)));
    return batch === STOPPED ? [] : batch;
  }

  /** Acknowledges messages; resolves to how many were newly acknowledged. */
  async acknowledge(messages) {
    const tokens = messages.map((m) => m.ackToken());
    const n = await this._withReconnect(() => this._ack(tokens));
    return n === STOPPED ? 0 : n;
  }

  /** consumer_info(): the consumer's configuration and counters. */
  async info() {
    return this._withReconnect(async () => {
      const conn = await this._work();
      const r = await conn.query('SELECT notify_ext.consumer_info($1::uuid) AS info', [this.consumerId]);
      return r.rows[0].info;
    });
  }

  // -------------------------------------------------------------- internals

  async _channel(conn) {
    const r = await conn.query('SELECT notify_ext.get_event_message_stream($1::uuid) AS channel', [
      this.consumerId,
    ]);
    return r.rows[0].channel;
  }

  async _onConnect() {
    // What was handled before the connection was lost is acknowledged
    // before anything else happens on the new one.
    await this._flushAcks();
  }

  _onNotification(payload) {
    try {
      const seq = Number(JSON.parse(payload).seq);
      if (seq > this._announced) this._announced = seq;
    } catch {
      // not a wake-up of ours
    }
  }

  _onStop() {
    // A long poll waits on the server: end its connection (the loop
    // reconnects when it runs again).
    const conn = this._longPolling;
    if (conn) {
      conn.stoppedByUs = true;
      conn.end().catch(() => {});
    }
  }

  _gaveUp() {
    if (this._unacked.length > 0) {
      this.emit('warning', new Error(
        `consumer ${this.consumerId} stopped before it could acknowledge ${this._unacked.length} messages; ` +
          'they will be redelivered',
      ));
      this._unacked = [];
    }
  }

  async _fetch(waitMs) {
    const conn = await this._work();
    if (waitMs > 0) this._longPolling = conn;
    let r;
    try {
      r = await conn.query(
        'SELECT seq, message, reply, salt, hmac, delivery_count ' +
          'FROM notify_ext.get_event_message_batch($1::uuid, $2, make_interval(secs => $3))',
        [this.consumerId, this.batchSize, waitMs / 1000],
      );
    } catch (err) {
      if (conn.stoppedByUs) {
        this._conn = null;
        err.stoppedByUs = true;
      }
      throw err;
    } finally {
      this._longPolling = null;
    }
    const batch = r.rows.map((row) => new Message(row));
    if (batch.length > 0) this._fetched = Math.max(this._fetched, batch[batch.length - 1].seq);
    return batch;
  }

  async _nextBatch() {
    if (this._stopping) return STOPPED;
    if (!this._listener) return this._fetch(this.pollInterval);
    this._checkListener();
    this._woken = false; // wake-ups that came before this fetch are answered by it
    let batch = await this._fetch(0);
    if (batch.length === 0 && this._announced > this._fetched) {
      // An announced event can sit behind an earlier-numbered transaction
      // that is still committing: give the server a moment, once.
      this._fetched = this._announced;
      batch = await this._fetch(Math.min(1000, this.pollInterval));
    }
    return batch;
  }

  async _idle() {
    if (!this._listener) return; // the long poll has waited already
    this._checkListener();
    await this._sleep(this.pollInterval);
    this._checkListener();
  }

  async _ack(tokens) {
    if (tokens.length === 0) return 0;
    const conn = await this._work();
    const r = await conn.query('SELECT notify_ext.acknowledge_message_batch($1::jsonb) AS n', [
      JSON.stringify(tokens),
    ]);
    return r.rows[0].n;
  }

  async _flushAcks() {
    const tokens = this._unacked;
    if (tokens.length === 0 || !this._conn) return;
    try {
      await this._ack(tokens);
    } catch (err) {
      if (err.code !== '28000') throw err;
      // Signed under a key rotated out long ago: the server hands these
      // messages out again, with new replies.
      this.emit('warning', err);
    }
    this._unacked = [];
  }
}

module.exports = { Consumer, Message };
