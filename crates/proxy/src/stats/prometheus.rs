//! The Prometheus `/metrics` page (ours, not C's): the facts of [`StatsView`] in the text
//! format 0.0.4, names prefixed `mtproxy_`, through a `prometheus_client` collector.

use super::view::StatsView;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// `Content-Type` of `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Encodes a [`StatsView`] as Prometheus families, in a fixed order.
#[derive(Debug)]
struct ViewCollector(StatsView);

type Enc<'a> = DescriptorEncoder<'a>;

fn counter(e: &mut Enc, name: &str, help: &str, v: u64) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut Enc,
    name: &str,
    help: &str,
    v: V,
) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// One family with one label; `series` gives (label value, value).
fn labelled(
    e: &mut Enc,
    kind: MetricType,
    name: &str,
    help: &str,
    label: &'static str,
    series: impl IntoIterator<Item = (String, u64)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (value, n) in series {
        let labels = [(label, value)];
        let mut f = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => f.encode_counter::<NoLabelSet, _, u64>(&n, None)?,
            _ => f.encode_gauge(&n)?,
        }
    }
    Ok(())
}

fn pairs<const N: usize>(items: [(&str, u64); N]) -> impl Iterator<Item = (String, u64)> + '_ {
    items.into_iter().map(|(k, v)| (k.to_string(), v))
}

impl Collector for ViewCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let v = &self.0;
        let c = MetricType::Counter;
        let g = MetricType::Gauge;
        gauge(
            &mut e,
            "start_time_seconds",
            "Unix time the proxy started.",
            v.start_time,
        )?;
        counter(
            &mut e,
            "client_accepted",
            "Client connections accepted on the -H ports.",
            v.accepted,
        )?;
        gauge(
            &mut e,
            "client_active",
            "Client connections open now.",
            v.active,
        )?;
        let [ab, int, pad] = v.handshakes_ok;
        labelled(
            &mut e,
            c,
            "client_connections",
            "Client connections whose obfuscated2 header was accepted, by transport.",
            "transport",
            pairs([("abridged", ab), ("intermediate", int), ("padded", pad)]),
        )?;
        labelled(
            &mut e,
            c,
            "handshakes",
            "Client handshakes: accepted, rejected by every secret, or timed out.",
            "result",
            pairs([
                ("accepted", ab + int + pad),
                ("rejected", v.handshakes_bad),
                ("timeout", v.handshakes_timeout),
            ]),
        )?;
        labelled(
            &mut e,
            c,
            "tls_handshakes",
            "Fake-TLS connections: hellos accepted or rejected, connections masked (spliced to the real site), replays.",
            "result",
            pairs([
                ("accepted", v.tls_accepted),
                ("rejected", v.tls_rejected),
                ("masked", v.tls_masked),
                ("replayed", v.tls_replayed),
            ]),
        )?;
        labelled(
            &mut e,
            c,
            "relayed_bytes",
            "Payload bytes relayed: up = client to Telegram, down = Telegram to client.",
            "direction",
            pairs([("up", v.bytes_up), ("down", v.bytes_down)]),
        )?;
        counter(
            &mut e,
            "idle_closed",
            "Client sessions closed by the idle timeout.",
            v.idle_closed,
        )?;
        counter(
            &mut e,
            "dc_fallbacks",
            "Sessions whose DC id was unknown and went to the default DC.",
            v.dc_fallbacks,
        )?;
        counter(
            &mut e,
            "upstream_connect_failures",
            "Direct mode: DC dials that failed on every address.",
            v.upstream_connect_failed,
        )?;
        gauge(
            &mut e,
            "upstream_connections",
            "Open upstream connections (ME connections, or DC connections in direct mode).",
            v.outbound_connections,
        )?;
        let mut prev = 0u64;
        let buckets: Vec<(f64, u64)> = v
            .connect_latency
            .iter()
            .map(|&(le, cum)| {
                let n = cum.saturating_sub(prev);
                prev = prev.max(cum);
                (le, n)
            })
            .collect();
        e.encode_descriptor(
            "upstream_connect_duration_seconds",
            "Time to establish an upstream connection (TCP connect, and the RPC handshake for MEs).",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(
            v.connect_latency_sum,
            v.connect_latency_count,
            &buckets,
            None,
        )?;
        gauge(
            &mut e,
            "me_targets",
            "Middle-end targets in the pool.",
            v.me_targets,
        )?;
        gauge(
            &mut e,
            "me_ready_targets",
            "Middle-end targets with at least one ready connection.",
            v.me_ready_targets,
        )?;
        gauge(
            &mut e,
            "me_ready_connections",
            "Ready middle-end connections.",
            v.me_ready_connections,
        )?;
        labelled(
            &mut e,
            c,
            "me_connects",
            "Middle-end connections that completed the handshake, and dial or handshake failures.",
            "result",
            pairs([("ok", v.me_connects), ("failed", v.me_connect_failed)]),
        )?;
        labelled(
            &mut e,
            c,
            "me_queries",
            "Client packets sent to middle-ends (RPC_PROXY_REQ), or dropped for want of one.",
            "result",
            pairs([
                ("forwarded", v.forwarded_queries),
                ("dropped", v.dropped_queries),
            ]),
        )?;
        labelled(
            &mut e,
            c,
            "me_responses",
            "RPC_PROXY_ANS delivered to clients, or dropped (unknown or closed session).",
            "result",
            pairs([
                ("forwarded", v.forwarded_responses),
                ("dropped", v.dropped_responses),
            ]),
        )?;
        labelled(
            &mut e,
            c,
            "me_simple_acks",
            "RPC_SIMPLE_ACK delivered to clients, or dropped.",
            "result",
            pairs([
                ("forwarded", v.forwarded_simple_acks),
                ("dropped", v.dropped_simple_acks),
            ]),
        )?;
        gauge(
            &mut e,
            "me_sessions",
            "Client sessions bound to a middle-end now.",
            v.ext_connections,
        )?;
        counter(
            &mut e,
            "me_sessions_created",
            "Client sessions ever bound to a middle-end.",
            v.ext_connections_created,
        )?;
        counter(
            &mut e,
            "clients_closed_flood",
            "Clients closed because too much data waited for them.",
            v.failed_flood,
        )?;
        counter(
            &mut e,
            "clients_closed_budget",
            "ME-mode clients shed because all together held more than --msg-buffers-size (the biggest holders go first).",
            v.failed_lru,
        )?;
        gauge(
            &mut e,
            "me_buffered_bytes",
            "Bytes ME-mode sessions hold now (queued answers, batches being written, incomplete client frames), charged against --msg-buffers-size.",
            v.me_buffered_bytes,
        )?;
        labelled(
            &mut e,
            g,
            "secret_active_ips",
            "Distinct client IPs with a live session, by secret index (1-based, as given).",
            "secret",
            v.secrets
                .iter()
                .enumerate()
                .map(|(i, s)| ((i + 1).to_string(), s.active_ips)),
        )?;
        labelled(
            &mut e,
            g,
            "secret_active_auth_keys",
            "Distinct non-zero auth_key_ids of live sessions, by secret index.",
            "secret",
            v.secrets
                .iter()
                .enumerate()
                .map(|(i, s)| ((i + 1).to_string(), s.active_auth_keys)),
        )?;
        labelled(
            &mut e,
            c,
            "config_reloads",
            "SIGHUP reloads applied, or refused (the previous config stays).",
            "result",
            pairs([("ok", v.reloads_ok), ("failed", v.reloads_failed)]),
        )?;
        gauge(
            &mut e,
            "config_loaded_at_seconds",
            "Unix time the config in force was applied (0: no config).",
            v.config_loaded_at,
        )?;
        gauge(
            &mut e,
            "proxy_tag_set",
            "1 if a proxy tag (-P) is set.",
            u64::from(v.proxy_tag_set),
        )?;
        Ok(())
    }
}

/// The view as Prometheus text format 0.0.4 (names prefixed `mtproxy_`). Per-secret series
/// carry the secret's index (`secret="1"`), never the secret.
pub fn render_metrics(v: &StatsView) -> String {
    let mut registry = Registry::with_prefix("mtproxy");
    registry.register_collector(Box::new(ViewCollector(v.clone())));
    registry.register_collector(Box::new(super::dpi_metrics::DpiCollector(v.dpi.clone())));
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail; an encoder error would only truncate the page.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::test_support::*;

    #[test]
    fn metrics_parse_and_carry_the_view() {
        let text = render_metrics(&full_view());
        let s = parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(!text.contains("# EOF"), "0.0.4, not OpenMetrics");
        type Check<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);
        let checks: &[Check] = &[
            ("mtproxy_client_accepted_total", &[], 25.0),
            ("mtproxy_client_active", &[], 3.0),
            (
                "mtproxy_client_connections_total",
                &[("transport", "abridged")],
                7.0,
            ),
            (
                "mtproxy_client_connections_total",
                &[("transport", "intermediate")],
                8.0,
            ),
            (
                "mtproxy_client_connections_total",
                &[("transport", "padded")],
                9.0,
            ),
            ("mtproxy_handshakes_total", &[("result", "accepted")], 24.0),
            ("mtproxy_handshakes_total", &[("result", "rejected")], 2.0),
            ("mtproxy_handshakes_total", &[("result", "timeout")], 1.0),
            ("mtproxy_tls_handshakes_total", &[("result", "masked")], 5.0),
            (
                "mtproxy_tls_handshakes_total",
                &[("result", "replayed")],
                6.0,
            ),
            (
                "mtproxy_relayed_bytes_total",
                &[("direction", "up")],
                1000.0,
            ),
            (
                "mtproxy_relayed_bytes_total",
                &[("direction", "down")],
                5000.0,
            ),
            ("mtproxy_me_targets", &[], 3.0),
            ("mtproxy_me_ready_targets", &[], 2.0),
            ("mtproxy_me_ready_connections", &[], 8.0),
            ("mtproxy_me_connects_total", &[("result", "ok")], 9.0),
            ("mtproxy_me_connects_total", &[("result", "failed")], 19.0),
            ("mtproxy_me_queries_total", &[("result", "forwarded")], 24.0),
            ("mtproxy_me_queries_total", &[("result", "dropped")], 13.0),
            (
                "mtproxy_me_responses_total",
                &[("result", "forwarded")],
                23.0,
            ),
            ("mtproxy_me_responses_total", &[("result", "dropped")], 14.0),
            (
                "mtproxy_me_simple_acks_total",
                &[("result", "dropped")],
                16.0,
            ),
            ("mtproxy_me_sessions", &[], 2.0),
            ("mtproxy_secret_active_ips", &[("secret", "1")], 0.0),
            ("mtproxy_secret_active_ips", &[("secret", "2")], 1.0),
            ("mtproxy_secret_active_auth_keys", &[("secret", "2")], 1.0),
            ("mtproxy_secret_active_auth_keys", &[("secret", "3")], 0.0),
            ("mtproxy_config_reloads_total", &[("result", "ok")], 20.0),
            (
                "mtproxy_config_reloads_total",
                &[("result", "failed")],
                21.0,
            ),
            ("mtproxy_proxy_tag_set", &[], 1.0),
        ];
        for (name, labels, want) in checks {
            assert_eq!(value(&s, name, labels), *want, "{name}{labels:?}");
        }
        // Counters and the histogram are typed as such.
        assert!(text.contains("# TYPE mtproxy_me_queries_total counter\n"));
        assert!(text.contains("# TYPE mtproxy_me_targets gauge\n"));
        assert!(text.contains("# TYPE mtproxy_upstream_connect_duration_seconds histogram\n"));
        // Secret labels are indices only.
        for smp in s.iter().filter(|x| x.name.starts_with("mtproxy_secret_")) {
            let idx = &smp.labels[0].1;
            assert!(idx.parse::<usize>().is_ok_and(|i| (1..=3).contains(&i)));
        }
    }

    #[test]
    fn metrics_histogram_keeps_cumulative_counts() {
        let s = parse_metrics(&render_metrics(&full_view())).unwrap();
        let h = "mtproxy_upstream_connect_duration_seconds";
        let b = format!("{h}_bucket");
        for (le, want) in [
            ("0.001", 1.0),
            ("0.01", 4.0),
            ("0.1", 8.0),
            ("1", 9.0),
            ("+Inf", 10.0),
        ] {
            assert_eq!(value(&s, &b, &[("le", le)]), want, "le={le}");
        }
        assert_eq!(value(&s, &format!("{h}_sum"), &[]), 0.25);
        assert_eq!(value(&s, &format!("{h}_count"), &[]), 10.0);
        // An empty view still renders a valid page with every family.
        let empty = parse_metrics(&render_metrics(&StatsView::default())).unwrap();
        assert_eq!(value(&empty, &b, &[("le", "+Inf")]), 0.0);
        assert!(!empty.iter().any(|x| x.name.starts_with("mtproxy_secret_")));
    }
}
