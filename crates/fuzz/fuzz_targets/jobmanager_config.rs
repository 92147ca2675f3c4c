//! port-sync's reading of the JobManager's `GET /jobmanager/config` body, on any bytes (the
//! REST address may answer with anything: a proxy's page, a truncated body, another service):
//! no panic, and an Ok holds a real port for every mapped Service port.

#![no_main]

use libfuzzer_sys::fuzz_target;
use port_sync::flink::{ConfigError, parse_config};
use port_sync::ports::{DesiredPorts, PortMapping};
use std::sync::LazyLock;

/// The input is the body alone, so that captured answers seed the corpus as they are; the
/// mappings are fixed: the chart's, one of them alone, none, and one key behind two names.
struct MappingSets {
    chart: Vec<PortMapping>,
    rpc_only: Vec<PortMapping>,
    none: Vec<PortMapping>,
    one_key_two_ports: Vec<PortMapping>,
}

static MAPPINGS: LazyLock<MappingSets> = LazyLock::new(|| MappingSets {
    chart: vec![
        PortMapping::new("rpc", "jobmanager.rpc.port"),
        PortMapping::new("blob", "blob.server.port"),
    ],
    rpc_only: vec![PortMapping::new("rpc", "jobmanager.rpc.port")],
    none: Vec::new(),
    one_key_two_ports: vec![
        PortMapping::new("rpc", "jobmanager.rpc.port"),
        PortMapping::new("rpc-again", "jobmanager.rpc.port"),
    ],
});

/// Longest error text the excerpting variants may carry: 80 characters and an ellipsis for the
/// body's start; an entry's JSON likewise, inside a sentence.
const MAX_EXCERPT_CHARS: usize = 81;
const MAX_SHAPE_CHARS: usize = 200;

fuzz_target!(|body: &[u8]| {
    let mappings = &*MAPPINGS;
    let chart = check(body, &mappings.chart);
    let rpc_only = check(body, &mappings.rpc_only);
    if let Ok(chart) = &chart {
        // The chart's mapping read rpc, so reading rpc alone stops at the same entry.
        assert_eq!(
            rpc_only.as_ref().ok().and_then(|ports| ports.get("rpc")),
            chart.get("rpc"),
            "rpc read alone differs"
        );
    }
    if let Ok(none) = check(body, &mappings.none) {
        assert_eq!(none.len(), 0, "ports without a mapping");
    }
    if let Ok(both) = check(body, &mappings.one_key_two_ports) {
        assert_eq!(both.get("rpc"), both.get("rpc-again"), "one key, two ports");
    }
});

/// Parses `body` for `mappings` and checks what any answer must satisfy.
fn check(body: &[u8], mappings: &[PortMapping]) -> Result<DesiredPorts, ConfigError> {
    let result = parse_config(body, mappings);
    match &result {
        Ok(ports) => {
            for mapping in mappings {
                let port = ports.get(&mapping.port_name);
                assert!(
                    port.is_some_and(|port| port >= 1),
                    "{} has port {port:?}",
                    mapping.port_name
                );
            }
            assert!(
                ports
                    .iter()
                    .all(|(name, _)| mappings.iter().any(|mapping| mapping.port_name == name)),
                "a port nobody mapped"
            );
        }
        Err(error) => {
            match error {
                ConfigError::Html { start } | ConfigError::NotJson { start, .. } => assert!(
                    start.chars().count() <= MAX_EXCERPT_CHARS,
                    "body excerpt of {} characters",
                    start.chars().count()
                ),
                ConfigError::WrongShape { found } => assert!(
                    found.chars().count() <= MAX_SHAPE_CHARS,
                    "shape description of {} characters",
                    found.chars().count()
                ),
                // The value is quoted whole (bounded only by the 1 MiB body cap): not checked.
                ConfigError::KeyMissing { .. } | ConfigError::NotAPort { .. } => {}
            }
            // The message is what the operator reads; building it must not panic either.
            drop(error.to_string());
        }
    }
    result
}
