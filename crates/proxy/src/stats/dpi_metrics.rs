//! The `/metrics` families of [`DpiView`] (names prefixed `mtproxy_` by the registry):
//!
//! - `tls_site_mirrored` 1 when our answers follow the probed site, 0 on the fallback, and
//!   `tls_site_fallback{reason}` saying why;
//! - `tls_site_flight_bytes{stat="min|median|max"}`, `tls_site_flight_records`,
//!   `tls_site_supported_versions_first`, `tls_site_cipher{client_first,chosen}`,
//!   `tls_site_probed_at_seconds`: the learned shape;
//! - `tls_killed_after_handshake_total{port}`, `tls_client_ja4_total{ja4}` (with
//!   `ja4="other"`), `tls_masked_total{reason}`.
//!
//! Not here: the other families (`prometheus`), the counting (`dpi`).

use super::dpi::DpiView;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Encodes a [`DpiView`] after the main families.
#[derive(Debug)]
pub struct DpiCollector(pub DpiView);

type Enc<'a> = DescriptorEncoder<'a>;

/// One family; `series` gives (labels, value).
fn family<L: EncodeLabelSet>(
    e: &mut Enc,
    kind: MetricType,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (labels, n) in series {
        let mut f = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => f.encode_counter::<NoLabelSet, _, u64>(&n, None)?,
            _ => f.encode_gauge(&n)?,
        }
    }
    Ok(())
}

fn gauge(e: &mut Enc, name: &str, help: &str, v: u64) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

fn site(e: &mut Enc, v: &DpiView) -> std::fmt::Result {
    let Some(s) = &v.site else { return Ok(()) };
    let g = MetricType::Gauge;
    gauge(
        e,
        "tls_site_mirrored",
        "1 if fake-TLS answers follow the probed site's, 0 if they use the common-server fallback.",
        u64::from(s.mirrored),
    )?;
    let why = (!s.mirrored).then(|| ([("reason", s.reason.clone())], 1));
    family(
        e,
        g,
        "tls_site_fallback",
        "Why the site could not be mirrored (present only on the fallback).",
        why,
    )?;
    let (min, median, max) = s.sizes;
    family(
        e,
        g,
        "tls_site_flight_bytes",
        "Length of the one application-data record our ServerHello carries: the site's whole encrypted first flight.",
        [("min", min), ("median", median), ("max", max)]
            .map(|(k, n)| ([("stat", k.to_string())], n)),
    )?;
    gauge(
        e,
        "tls_site_flight_records",
        "Records the site's encrypted first flight had (median over the probes).",
        s.records,
    )?;
    gauge(
        e,
        "tls_site_supported_versions_first",
        "1 if the ServerHello lists supported_versions before key_share.",
        u64::from(s.supported_versions_first),
    )?;
    family(
        e,
        g,
        "tls_site_cipher",
        "The cipher suite the site chose when the client's first TLS 1.3 suite was client_first.",
        s.ciphers.iter().map(|(a, b)| {
            (
                [
                    ("client_first", format!("{a:04x}")),
                    ("chosen", format!("{b:04x}")),
                ],
                1,
            )
        }),
    )?;
    gauge(
        e,
        "tls_site_probed_at_seconds",
        "Unix time of the probe round the profile comes from.",
        s.probed_at,
    )
}

impl Collector for DpiCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let v = &self.0;
        let c = MetricType::Counter;
        site(&mut e, v)?;
        family(
            &mut e,
            c,
            "tls_killed_after_handshake",
            "Clients whose hello passed and who then sent nothing or reset soon after our ServerHello, by listening port (a DPI drop looks like this).",
            v.killed.iter().map(|(p, n)| ([("port", p.to_string())], *n)),
        )?;
        family(
            &mut e,
            c,
            "tls_client_ja4",
            "Accepted ClientHellos by JA4 fingerprint (the first 32 seen; later ones under other).",
            v.ja4
                .iter()
                .map(|(j, n)| ([("ja4", j.clone())], *n))
                .chain([([("ja4", "other".to_string())], v.ja4_other)]),
        )?;
        family(
            &mut e,
            c,
            "tls_masked",
            "Connections spliced to the real site, by reason.",
            v.masked
                .iter()
                .map(|(r, n)| ([("reason", r.to_string())], *n)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::dpi::SiteView;

    fn render(v: DpiView) -> String {
        let mut registry = prometheus_client::registry::Registry::with_prefix("mtproxy");
        registry.register_collector(Box::new(DpiCollector(v)));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn families_carry_the_view() {
        let v = DpiView {
            site: Some(SiteView {
                mirrored: true,
                reason: String::new(),
                sizes: (1180, 1182, 1184),
                records: 4,
                supported_versions_first: true,
                ciphers: vec![(0x1301, 0x1302)],
                probed_at: 7,
            }),
            killed: vec![(443, 3)],
            ja4: vec![("t13d1516h2_8daaf6152771_e5627efa2ab1".into(), 5)],
            ja4_other: 1,
            masked: vec![("replay", 2)],
        };
        let t = render(v);
        for line in [
            "mtproxy_tls_site_mirrored 1",
            "mtproxy_tls_site_flight_bytes{stat=\"max\"} 1184",
            "mtproxy_tls_site_flight_records 4",
            "mtproxy_tls_site_cipher{client_first=\"1301\",chosen=\"1302\"} 1",
            "mtproxy_tls_killed_after_handshake_total{port=\"443\"} 3",
            "mtproxy_tls_client_ja4_total{ja4=\"t13d1516h2_8daaf6152771_e5627efa2ab1\"} 5",
            "mtproxy_tls_client_ja4_total{ja4=\"other\"} 1",
            "mtproxy_tls_masked_total{reason=\"replay\"} 2",
        ] {
            assert!(t.contains(line), "{line} missing in\n{t}");
        }
        assert!(!t.contains("tls_site_fallback{"));
        let fb = render(DpiView {
            site: Some(SiteView {
                reason: "tls12_only".into(),
                ..SiteView::default()
            }),
            ..DpiView::default()
        });
        assert!(
            fb.contains("mtproxy_tls_site_fallback{reason=\"tls12_only\"} 1"),
            "{fb}"
        );
        assert!(fb.contains("mtproxy_tls_site_mirrored 0"));
    }
}
