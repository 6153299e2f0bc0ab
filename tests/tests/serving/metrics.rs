//! `/metrics` against a real mesh with real traffic: `promtool check metrics` accepts it, and
//! every per-link counter equals what the maps hold (through `SimHandle::counters`), the
//! dropped ones included; the gauges are the configured link parameters in base units.
//!
//! Needs root (see tests/serving) and `promtool` (Debian's `prometheus`, which `./x` installs):
//! `cargo xtask test` runs these.

use std::collections::BTreeMap;

use meshsim::{
    model::{HOST, NodeId},
    sim::Counters,
};
use meshsim_tests::serving::{Lab, promtool_check};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Sample lines by `name{labels}` (labels as written), values as text.
fn samples(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.to_owned())
        })
        .collect()
}

fn link_series(name: &str, from: NodeId, to: NodeId, extra: &str) -> String {
    // The host's end of a client link is named `host`.
    let name_of = |id: NodeId| {
        if id == HOST {
            "host".to_owned()
        } else {
            id.name()
        }
    };
    format!(
        "{name}{{src=\"{}\",dst=\"{}\"{extra}}}",
        name_of(from),
        name_of(to)
    )
}

async fn scrape(lab: &Lab) -> String {
    let response = lab.request(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.unwrap()
}

/// A scrape taken while the counters stood still (the same before and after it).
async fn steady_scrape(lab: &Lab) -> (String, Counters) {
    for _ in 0..20 {
        let before = lab.sim.counters().await.unwrap();
        let text = scrape(lab).await;
        let after = lab.sim.counters().await.unwrap();
        if before == after {
            return (text, after);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the counters never stood still for a scrape");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn metrics_pass_promtool_and_equal_the_maps() {
    let lab = Lab::start().await;
    // An empty mesh is valid too.
    promtool_check(&scrape(&lab).await);

    let n1 = lab.add_node(100.0, 100.0).await;
    let n2 = lab.add_node(200.0, 100.0).await;
    let n3 = lab.add_node(200.0, 200.0).await;
    // n2 learns n3's address while it still can: a pin holds both directions, so afterwards
    // n3's ARP answers would die too, and n2's echo requests would never be sent at all.
    assert!(lab.ping(n2, n3, 1).status.success());
    // Everything n2 sends to n3 is lost; n1 still reaches n3 directly (141 ms < 100 + 80).
    let (status, _) = lab
        .call(
            Method::PUT,
            &format!("/api/links/{}/{}", n2.0, n3.0),
            Some(json!({"loss_pct": 100, "latency_ms": 80})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(lab.ping(n1, n2, 3).status.success());
    assert!(lab.ping(n1, n3, 2).status.success());
    assert!(
        !lab.ping(n2, n3, 2).status.success(),
        "n2 reached n3 through a lossy link"
    );

    let (text, counters) = steady_scrape(&lab).await;
    promtool_check(&text);
    let got = samples(&text);
    let value = |series: &str| -> u64 {
        got.get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    };

    // Every directed link, with exactly the maps' counters: three links and each node's
    // client link, both directions.
    assert_eq!(
        counters.links.len(),
        12,
        "three links and three client links, both ways"
    );
    assert!(counters.links.contains_key(&(HOST, n1)) && counters.links.contains_key(&(n1, HOST)));
    for (&(from, to), c) in &counters.links {
        assert_eq!(
            value(&link_series("meshsim_link_packets_total", from, to, "")),
            c.packets
        );
        assert_eq!(
            value(&link_series("meshsim_link_bytes_total", from, to, "")),
            c.bytes
        );
        let dropped = |reason: &str| {
            value(&link_series(
                "meshsim_link_dropped_packets_total",
                from,
                to,
                &format!(",reason=\"{reason}\""),
            ))
        };
        assert_eq!(dropped("loss"), c.dropped_loss);
        assert_eq!(dropped("queue"), c.dropped_queue);
    }
    let packet_series = got
        .keys()
        .filter(|k| k.starts_with("meshsim_link_packets_total{"))
        .count();
    assert_eq!(
        packet_series,
        counters.links.len(),
        "no series for links that do not exist"
    );
    // The traffic is really there: n2's echo requests died on n2 -> n3.
    assert!(counters.links[&(n2, n3)].dropped_loss >= 2, "{counters:#?}");
    assert!(counters.links[&(n1, n2)].packets >= 3);
    let g = counters.global;
    assert_eq!(value("meshsim_unlinked_packets_total"), g.unlinked_packets);
    assert_eq!(value("meshsim_unlinked_bytes_total"), g.unlinked_bytes);
    assert_eq!(
        value("meshsim_unmatched_packets_total"),
        g.unmatched_packets
    );
    assert_eq!(value("meshsim_unmatched_bytes_total"), g.unmatched_bytes);
    assert_eq!(value("meshsim_flooded_packets_total"), g.flooded_packets);
    assert_eq!(value("meshsim_clone_failed_packets_total"), g.clone_failed);

    // The configured parameters, in base units, both directions.
    let gauge = |name: &str, from: NodeId, to: NodeId| -> f64 {
        got[&link_series(name, from, to, "")].parse().unwrap()
    };
    for (from, to) in [(n2, n3), (n3, n2)] {
        assert_eq!(gauge("meshsim_link_loss_ratio", from, to), 1.0);
        assert_eq!(gauge("meshsim_link_latency_seconds", from, to), 0.08);
        assert_eq!(gauge("meshsim_link_jitter_seconds", from, to), 0.0);
        assert_eq!(
            gauge("meshsim_link_bandwidth_bytes_per_second", from, to),
            64_000.0
        );
    }
    assert_eq!(gauge("meshsim_link_latency_seconds", n1, n2), 0.1);
    // A client link: unshaped by default (bandwidth +Inf), and both directions named.
    assert_eq!(gauge("meshsim_link_latency_seconds", HOST, n3), 0.0);
    assert_eq!(gauge("meshsim_link_loss_ratio", n3, HOST), 0.0);
    assert_eq!(gauge("meshsim_link_loss_ratio", n1, n2), 0.0);
    assert_eq!(got["meshsim_nodes"], "3");
    assert_eq!(got["meshsim_links"], "3");
    assert_eq!(got["meshsim_delays_enforced"], "0");

    // Unlimited bandwidth is +Inf, not 0 (which would read as "nothing passes").
    lab.call(
        Method::PUT,
        "/api/links/1/2",
        Some(json!({"bandwidth_bps": 0})),
    )
    .await;
    let text = scrape(&lab).await;
    promtool_check(&text);
    assert_eq!(
        samples(&text)[&link_series("meshsim_link_bandwidth_bytes_per_second", n1, n2, "")],
        "+Inf"
    );

    // Prometheus itself asks for OpenMetrics, and gets it.
    let om = lab
        .request(Method::GET, "/metrics")
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        om.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let om = om.text().await.unwrap();
    assert!(om.contains("# TYPE meshsim_link_packets counter\n"), "{om}");
    assert!(om.ends_with("# EOF\n"));
    lab.stop().await;
}
