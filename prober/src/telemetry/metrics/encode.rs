//! Writing one family or one series, shared by the collectors.

use std::fmt;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, MetricEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::results::{MetricHist, METRIC_BUCKETS_US};

pub fn micros_to_seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

pub fn unix_seconds(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

/// A counter family with one unlabelled series.
pub fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: impl EncodeCounterValue,
) -> Result<(), fmt::Error> {
    enc.encode_descriptor(name, help, unit, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// A gauge family with one unlabelled series.
pub fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: impl EncodeGaugeValue,
) -> Result<(), fmt::Error> {
    enc.encode_descriptor(name, help, unit, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// One labelled series of a counter family.
pub fn counter_with(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    v: u64,
) -> Result<(), fmt::Error> {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// One labelled series of a gauge family.
pub fn gauge_with(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    v: u64,
) -> Result<(), fmt::Error> {
    m.encode_family(labels)?.encode_gauge(&v)
}

/// One labelled series of a histogram family.
pub fn histogram_with(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    h: &MetricHist,
) -> Result<(), fmt::Error> {
    histogram(m.encode_family(labels)?, h)
}

/// Buckets as prometheus-client takes them: upper bound in seconds and the
/// count of that bucket alone (it accumulates them, and adds `+Inf` = count).
pub fn histogram(mut m: MetricEncoder, h: &MetricHist) -> Result<(), fmt::Error> {
    let buckets: [(f64, u64); METRIC_BUCKETS_US.len()] =
        std::array::from_fn(|i| (micros_to_seconds(METRIC_BUCKETS_US[i]), h.buckets[i]));
    m.encode_histogram::<NoLabelSet>(micros_to_seconds(h.sum_us), h.count(), &buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_print_as_written() {
        let bounds: Vec<String> = METRIC_BUCKETS_US
            .iter()
            .map(|&us| micros_to_seconds(us).to_string())
            .collect();
        assert_eq!(
            bounds,
            [
                "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
                "2.5", "5", "10"
            ]
        );
    }
}
