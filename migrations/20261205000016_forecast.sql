-- Forecasts on trend findings (issue 17, item 6): when a drift in the total
-- latency's alert quantile would carry it across the probe's `latency`
-- alert threshold, the finding says when.
--
-- * `crosses_at`, `crosses_us`: the time the drift's Theil–Sen line reaches
--   the threshold, and the threshold (µs); null on findings without one.
-- * `statistic` may name any quantile a latency rule uses (`p90`, `p99.9`),
--   not only p50/p95/p99: the forecast is made on the rule's own quantile.
--
-- Both are additive: a previous release (N-1) neither reads nor writes the
-- new columns, and writes only statistics the new check allows.

alter table trends
    add column crosses_at timestamptz,
    add column crosses_us double precision;

alter table trends drop constraint trends_statistic_check;
alter table trends add constraint trends_statistic_check
    check (statistic = 'failure_ratio' or statistic ~ '^p[0-9]{1,2}(\.[0-9]{1,3})?$');
