/**
 * Milliseconds since the epoch on a clock that never steps back: the process's time origin plus the
 * monotonic performance.now(). Every time that is compared with another to make a duration a client
 * relies on — stale reads' freshness (ticks, leader contact, the read's "now"), peer liveness — comes
 * from here: an NTP step of Date.now() backwards would otherwise shrink them (X-Staleness-Ms 0 right
 * after a step). Not for log time or anything stored: it drifts from the wall clock as the host's does.
 */
export const monoNowMs = (): number => performance.timeOrigin + performance.now();
