//! port-sync, the built binary, against a real Flink 2.3 JobManager (ZooKeeper HA, a real
//! ZooKeeper 3.8) whose REST API speaks HTTPS only (`security.ssl.rest.enabled`), with a CA and
//! a server certificate for 127.0.0.1 made by the JDK's keytool (`fixtures::flink::RestTls`),
//! and the test bed's Kubernetes API stand-in. The https path of `--jobmanager-url` and
//! `--jobmanager-ca`: it syncs with the CA, says why without it, and refuses a bad CA file.

use e2e::kube_bed::{Bed, LIMIT};
use e2e::{Finished, run};
use fixtures::flink::{DEFAULT_VERSION, Flink, JobManager, JobManagerConfig, RestTls};
use fixtures::ports::free_port;
use fixtures::process::{Echo, Process};
use fixtures::zookeeper::{Ensemble, EnsembleConfig};
use kube_stand_in::ApiServerConfig;
use std::path::Path;
use std::time::{Duration, Instant};

/// A JobManager answers REST in 5-15 s here; a restart waits for ZooKeeper to expire the
/// killed one's session too.
const JVM_START: Duration = Duration::from_secs(120);

fn once(bed: &Bed, jobmanager: &str, extra: &[&str]) -> Finished {
    let mut args = vec!["--once"];
    args.extend_from_slice(extra);
    run("port-sync", bed.port_sync(jobmanager, &args), LIMIT)
}

fn path_text(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8 here")
}

#[test]
fn over_https_it_syncs_with_the_ca_and_names_jobmanager_ca_without_it() {
    let started = Instant::now();
    let zookeeper = Ensemble::start_standalone(EnsembleConfig::standalone()).unwrap();
    let flink = Flink::install(DEFAULT_VERSION).unwrap();
    let tls = RestTls::make().unwrap();
    eprintln!("keytool made the CA and stores in {:?}", started.elapsed());
    let bed = Bed::new(ApiServerConfig::default());
    let mut jobmanager = JobManager::start(
        &flink,
        JobManagerConfig::new(&zookeeper.connect_string()).rest_tls(&tls),
    )
    .unwrap();
    // The test bed itself reads the REST API over TLS, trusting the CA alone.
    jobmanager.wait_rest_ready(JVM_START).unwrap();
    let url = jobmanager.rest_url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let (rpc, blob) = jobmanager.live_ports().unwrap();
    assert!(rpc != 0 && blob != 0, "random ports are bound in HA mode");
    // Plain HTTP is refused: REST is HTTPS only, so the https path is what is tested.
    let plain = fixtures::flink::rest::get(
        jobmanager.rest_address(),
        "/jobmanager/config",
        Duration::from_secs(5),
    );
    assert!(
        !matches!(&plain, Ok(response) if response.status == 200),
        "REST SSL is on, yet plain HTTP answered: {plain:?}"
    );

    // Without --jobmanager-ca: the system's roots do not know the CA.
    let untrusted = once(&bed, &url, &[]);
    assert_eq!(untrusted.code, Some(1), "{}", untrusted.said());
    let said = untrusted.said();
    eprintln!("without --jobmanager-ca: {}", untrusted.stdout.trim_end());
    assert!(said.contains("certificate is not trusted"), "{said}");
    assert!(said.contains("--jobmanager-ca"), "{said}");
    assert_eq!(bed.patches(), 0, "{said}");
    assert!(bed.holds(6123, 6124), "{said}");
    // The loop warns (a refused certificate is no start-up delay to wait out quietly).
    let mut blind = Process::spawn(
        "port-sync",
        bed.port_sync(&url, &["--listen", &format!("127.0.0.1:{}", free_port())]),
        Echo::Quiet,
    )
    .unwrap();
    let warned = blind.wait_for_line(Duration::from_secs(10), |line| {
        line.contains("WARN") && line.contains("certificate is not trusted")
    });
    assert!(warned.is_some(), "{}", blind.output());
    blind.kill();
    assert_eq!(bed.patches(), 0, "{}", blind.output());

    // With it: in sync with the JobManager's live ports, one patch.
    let ca = tls.ca_pem();
    let synced = once(&bed, &url, &["--jobmanager-ca", path_text(&ca)]);
    assert_eq!(synced.code, Some(0), "{}", synced.said());
    assert!(bed.holds(rpc, blob), "{}", synced.said());
    assert_eq!(bed.patches(), 1, "{}", synced.said());
    assert!(
        synced.stdout.contains(&format!("{url}/jobmanager/config")),
        "{}",
        synced.said()
    );

    // The loop over https follows a restart that binds new ports.
    let mut sidecar = Process::spawn(
        "port-sync",
        bed.port_sync(
            &url,
            &[
                "--jobmanager-ca",
                path_text(&ca),
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
            ],
        ),
        Echo::Quiet,
    )
    .unwrap();
    jobmanager.restart().unwrap();
    jobmanager.wait_rest_ready(JVM_START).unwrap();
    let answered = Instant::now();
    let (rpc2, blob2) = jobmanager.live_ports().unwrap();
    assert_ne!(
        (rpc2, blob2),
        (rpc, blob),
        "a restart binds new random ports"
    );
    bed.wait_holds(rpc2, blob2, &sidecar);
    eprintln!(
        "after the restart: rpc {rpc2} blob {blob2}, Service synced {:?} after REST answered \
         (the whole test: {:?})",
        answered.elapsed(),
        started.elapsed()
    );
    assert!(sidecar.is_running(), "{}", sidecar.output());
    let log = sidecar.output();
    assert!(!log.contains("not trusted"), "{log}");
}

#[test]
fn a_ca_file_that_is_missing_or_not_pem_is_a_usage_error_naming_the_file() {
    let bed = Bed::new(ApiServerConfig::default());
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: the CA file is refused before any connection.
    let url = format!("https://127.0.0.1:{}", free_port());

    let missing = dir.path().join("no-such-ca.pem");
    let not_pem = dir.path().join("keystore.p12");
    std::fs::write(
        &not_pem,
        b"\x30\x82\x01\x00 not a PEM file, a PKCS12 keystore say",
    )
    .unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, b"").unwrap();
    for (file, said) in [
        (&missing, "cannot read it"),
        (&not_pem, "PEM"),
        (&empty, "PEM"),
    ] {
        let finished = once(&bed, &url, &["--jobmanager-ca", path_text(file)]);
        let all = finished.said();
        assert_eq!(finished.code, Some(2), "{all}");
        assert!(
            finished
                .stderr
                .contains(&format!("--jobmanager-ca {}", file.display())),
            "{all}"
        );
        assert!(finished.stderr.contains(said), "{all}");
    }
    assert_eq!(bed.patches(), 0);
    assert!(bed.holds(6123, 6124));
}
