'use strict';

/**
 * Capped exponential backoff with jitter, for reconnecting.
 *
 * The n-th delay (counted from 0) is drawn uniformly from [d / 2, d] with
 * d = min(maximum, initial * multiplier ** n), in milliseconds: it grows
 * exponentially, never exceeds `maximum`, and the jitter keeps many
 * clients that lost the same server from reconnecting in lockstep.
 */
class Backoff {
  constructor({ initial = 100, maximum = 10000, multiplier = 2 } = {}) {
    if (!(initial > 0) || !(maximum >= initial) || !(multiplier >= 1)) {
      throw new RangeError(
        `Backoff needs 0 < initial <= maximum and multiplier >= 1, not initial=${initial}, ` +
          `maximum=${maximum}, multiplier=${multiplier}`,
      );
    }
    this.initial = initial;
    this.maximum = maximum;
    this.multiplier = multiplier;
    this.attempt = 0;
  }

  /** The delay before the next attempt, in milliseconds. */
  next() {
    const ceiling = Math.min(this.maximum, this.initial * this.multiplier ** Math.min(this.attempt, 64));
    this.attempt += 1;
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** Starts over from `initial`. */
  reset() {
    this.attempt = 0;
  }
}

module.exports = { Backoff };
