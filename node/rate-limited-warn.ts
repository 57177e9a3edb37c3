import type { Logger } from 'pino';

/**
 * A warning that may fire on every batch under a sick disk: logged at most
 * once per `everyMs`, each line carrying how many were left out since the
 * last one (`suppressed`) and the worst of them (`worstMs`), so a slow
 * period is visible without flooding the log. Every call is also counted.
 */
export class RateLimitedWarn {
  private lastAt = -Infinity;
  private suppressed = 0;
  private worstMs = 0;

  constructor(
    private readonly log: Logger,
    private readonly msg: string,
    private readonly everyMs: number,
    private readonly onReport: () => void = () => undefined,
    private readonly now: () => number = () => performance.now(),
  ) {}

  report(fields: { ms: number } & Record<string, unknown>): void {
    this.onReport();
    const t = this.now();
    if (t - this.lastAt < this.everyMs) {
      this.suppressed++;
      this.worstMs = Math.max(this.worstMs, fields.ms);
      return;
    }
    const extra = this.suppressed > 0 ? { suppressed: this.suppressed, suppressedWorstMs: this.worstMs } : {};
    this.log.warn({ ...fields, ...extra }, this.msg);
    this.lastAt = t;
    this.suppressed = 0;
    this.worstMs = 0;
  }
}
