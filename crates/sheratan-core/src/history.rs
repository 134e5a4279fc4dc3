//! The last hour of the hub's key gauges for the dashboard's charts: Core samples the data
//! plane's `/metrics` every `interval` (10 s by default) into a ring of 360 points.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use sheratan_client::DataClient;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

const POINTS: usize = 360;

pub use sheratan_proto::core_api::HistoryPoint as Point;

pub(crate) struct History {
    pub(crate) interval: Duration,
    points: Mutex<VecDeque<Point>>,
}

impl History {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            points: Mutex::new(VecDeque::with_capacity(POINTS)),
        }
    }

    pub(crate) fn points(&self) -> Vec<Point> {
        self.points
            .lock()
            .expect("history lock")
            .iter()
            .copied()
            .collect()
    }

    pub(crate) fn latest(&self) -> Option<Point> {
        self.points.lock().expect("history lock").back().copied()
    }

    fn push(&self, point: Point) {
        let mut points = self.points.lock().expect("history lock");
        if points.len() == POINTS {
            points.pop_front();
        }
        points.push_back(point);
    }
}

/// The sample from the data plane's Prometheus text; `None` if a gauge is missing.
pub fn parse(text: &str, at: OffsetDateTime) -> Option<Point> {
    let mut point = Point {
        t: (at.unix_timestamp_nanos() / 1_000_000) as i64,
        queue_depth: f64::NAN,
        inflight: f64::NAN,
        results_pending: f64::NAN,
        auth_failures_1m: 0.0,
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        match name {
            "sheratan_queue_depth_total" => point.queue_depth = value,
            "sheratan_inflight" => point.inflight = value,
            "sheratan_results_pending" => point.results_pending = value,
            n if n.starts_with("sheratan_auth_failures_1m{") => point.auth_failures_1m += value,
            _ => {}
        }
    }
    (!point.queue_depth.is_nan() && !point.inflight.is_nan() && !point.results_pending.is_nan())
        .then_some(point)
}

pub(crate) async fn sample(history: &History, data: DataClient, shutdown: CancellationToken) {
    loop {
        match data.metrics_text().await {
            Ok(text) => match parse(&text, OffsetDateTime::now_utc()) {
                Some(point) => history.push(point),
                None => tracing::warn!("core: the data plane's metrics lack the sampled gauges"),
            },
            Err(err) => tracing::debug!("core: cannot sample the hub's metrics: {err}"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(history.interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_gauges_and_sums_auth_failures() {
        let text = "# HELP x\nsheratan_queue_depth_total 7\nsheratan_inflight 2\nsheratan_results_pending 3\n\
                    sheratan_auth_failures_1m{reason=\"old_token\"} 1\nsheratan_auth_failures_1m{reason=\"invalid\"} 4\n";
        let p = parse(text, OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            (
                p.t,
                p.queue_depth,
                p.inflight,
                p.results_pending,
                p.auth_failures_1m
            ),
            (0, 7.0, 2.0, 3.0, 5.0)
        );
        assert_eq!(
            parse("sheratan_inflight 2\n", OffsetDateTime::UNIX_EPOCH),
            None
        );
    }
}
