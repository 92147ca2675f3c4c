//! zk-wait, the built binary, against real ZooKeeper 3.8 servers (Debian's zookeeperd, started
//! by the test bed on loopback ports) and against fake peers that misbehave on purpose.
//! Real: ZooKeeper, the binary, TCP and DNS resolution. Fake: only the misbehaving peers.

use e2e::{Finished, command, run};
use fixtures::fake_peer::{Behaviour, FakePeer};
use fixtures::ports::free_port;
use fixtures::process::{Echo, Process};
use fixtures::zookeeper::{Ensemble, EnsembleConfig};
use std::process::Command;
use std::time::{Duration, Instant};

/// Generous: these machines are shared and slow at times. Only a hang reaches it.
const LIMIT: Duration = Duration::from_secs(60);
const JVM_START: Duration = Duration::from_secs(60);

fn zk_wait(args: &[&str]) -> Command {
    let mut command = command("zk-wait", "ZK_WAIT_");
    command.args(args);
    command
}

fn once(connect: &str, extra: &[&str]) -> Finished {
    let mut args = vec!["--zookeeper", connect, "--once"];
    args.extend_from_slice(extra);
    run("zk-wait", zk_wait(&args), LIMIT)
}

#[test]
fn started_before_any_server_it_releases_soon_after_a_majority_serves() {
    let mut ensemble = Ensemble::new(EnsembleConfig::ensemble(3).whitelist("srvr,ruok")).unwrap();
    let connect = ensemble.connect_string();
    let mut waiter = Process::spawn(
        "zk-wait",
        zk_wait(&["--zookeeper", &connect, "--progress-every", "500ms"]),
        Echo::Quiet,
    )
    .unwrap();

    std::thread::sleep(Duration::from_millis(500));
    assert!(
        waiter.is_running(),
        "released with no server up:\n{}",
        waiter.output()
    );

    ensemble.start(0).unwrap();
    ensemble.wait_listening(0, JVM_START).unwrap();
    // A lone member answers imok but serves nothing: zk-wait must keep waiting.
    assert_eq!(ensemble.ask(0, "ruok").unwrap(), "imok");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !ensemble.is_serving(0),
        "a lone member of three should not serve"
    );
    assert!(
        waiter.is_running(),
        "released by a lone member:\n{}",
        waiter.output()
    );

    let second_started = Instant::now();
    ensemble.start(1).unwrap();
    let status = waiter.expect_exit(LIMIT);
    assert_eq!(status.code(), Some(0), "{}", waiter.output());
    assert!(
        ensemble.serving_count() >= 2,
        "released before a majority served"
    );
    assert!(second_started.elapsed() < LIMIT);
    let stdout = waiter.stdout();
    assert!(
        stdout.contains("ready: 2 of 3 servers ready, majority needs 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("connection refused"),
        "the third never started:\n{stdout}"
    );
    assert!(
        waiter.stderr().contains("not serving (imok)"),
        "progress should show the lone member's imok:\n{}",
        waiter.output()
    );
}

#[test]
fn a_lone_member_says_imok_but_is_not_ready_until_a_second_joins() {
    let mut ensemble = Ensemble::new(EnsembleConfig::ensemble(3).whitelist("srvr,ruok")).unwrap();
    let connect = ensemble.connect_string();
    ensemble.start(0).unwrap();
    ensemble.wait_listening(0, JVM_START).unwrap();
    let first = ensemble.client_address(0).to_string();

    let alone = once(&connect, &[]);
    assert_eq!(alone.code, Some(1), "{}", alone.said());
    assert!(
        alone.row(&first).contains("not serving"),
        "{}",
        alone.said()
    );
    assert!(alone.row(&first).ends_with("imok"), "{}", alone.said());
    assert!(
        alone
            .stdout
            .contains("not ready: 0 of 3 servers ready, majority needs 2")
    );
    // Even `any` does not take imok for serving.
    assert_eq!(once(&connect, &["--require", "any"]).code, Some(1));

    ensemble.start(1).unwrap();
    ensemble.wait_majority_serving(JVM_START).unwrap();
    let joined = once(&connect, &[]);
    assert_eq!(joined.code, Some(0), "{}", joined.said());
    assert!(
        joined.row(&first).contains("ready (leader)")
            || joined.row(&first).contains("ready (follower)")
    );
    assert_eq!(once(&connect, &["--require", "any"]).code, Some(0));
    let all = once(&connect, &["--require", "all"]);
    assert_eq!(all.code, Some(1), "{}", all.said());
    assert!(
        all.stdout
            .contains("not ready: 2 of 3 servers ready, all needs 3")
    );
}

#[test]
fn default_whitelist_works_and_notes_ruok_once() {
    let server = Ensemble::start_standalone(EnsembleConfig::standalone()).unwrap();
    let connect = server.connect_string();
    let finished = once(&connect, &[]);
    assert_eq!(finished.code, Some(0), "{}", finished.said());
    assert!(finished.row(&connect).contains("ready (standalone)"));
    assert!(finished.row(&connect).ends_with("not whitelisted"));
    assert_eq!(
        finished.stderr.matches("does not allow ruok").count(),
        1,
        "{}",
        finished.said()
    );
    assert!(finished.stderr.contains("4lw.commands.whitelist"));
}

/// A name is resolved and probed at its addresses. Where `localhost` also resolves to ::1 (not
/// on every machine), ZooKeeper listens on 127.0.0.1 only, and the name is ready through the
/// one address that serves.
#[test]
fn a_host_name_is_resolved_and_ready_through_an_address_that_serves() {
    let server = Ensemble::start_standalone(EnsembleConfig::standalone()).unwrap();
    let by_name = format!("localhost:{}", server.client_address(0).port());
    let finished = once(&by_name, &[]);
    assert_eq!(finished.code, Some(0), "{}", finished.said());
    let line = finished.row(&by_name);
    assert!(
        line.contains("127.0.0.1:") && line.contains("ready (standalone)"),
        "{line}"
    );
}

#[test]
fn all_words_allowed_shows_imok_beside_the_mode() {
    let server = Ensemble::start_standalone(EnsembleConfig::standalone().whitelist("*")).unwrap();
    let finished = once(&server.connect_string(), &[]);
    assert_eq!(finished.code, Some(0), "{}", finished.said());
    let line = finished.row(&server.connect_string());
    assert!(
        line.contains("ready (standalone)") && line.ends_with("imok"),
        "{line}"
    );
    assert!(
        !finished.stderr.contains("whitelist"),
        "{}",
        finished.said()
    );
}

/// ZooKeeper 3.5.3+ adds srvr to every whitelist (zkServer.sh needs it), so a real server
/// "allowing only ruok" still answers srvr: zk-wait judges by srvr, as it should.
#[test]
fn a_real_server_whitelisting_only_ruok_still_answers_srvr() {
    let server =
        Ensemble::start_standalone(EnsembleConfig::standalone().whitelist("ruok")).unwrap();
    assert!(server.ask(0, "srvr").unwrap().contains("Mode: standalone"));
    let finished = once(&server.connect_string(), &[]);
    assert_eq!(finished.code, Some(0), "{}", finished.said());
    let line = finished.row(&server.connect_string());
    assert!(
        line.contains("ready (standalone)") && line.ends_with("imok"),
        "{line}"
    );
}

/// A real ZooKeeper never refuses srvr (see above), but a server that does (an older or patched
/// one, or a proxy) must still be handled: these peers answer each word as ZooKeeper 3.8 words
/// its refusal, byte for byte.
fn refusing_peer(allows_ruok: bool) -> FakePeer {
    let refusal =
        |word: &str| format!("{word} is not executed because it is not in the whitelist.\n");
    let mut answers = vec![(b"srvr".to_vec(), refusal("srvr").into_bytes())];
    answers.push(if allows_ruok {
        (b"ruok".to_vec(), b"imok".to_vec())
    } else {
        (b"ruok".to_vec(), refusal("ruok").into_bytes())
    });
    FakePeer::start(Behaviour::AnswerByRequest(answers))
}

#[test]
fn srvr_refused_but_ruok_allowed_falls_back_to_imok_with_a_warning() {
    let peer = refusing_peer(true);
    let finished = once(&peer.address().to_string(), &[]);
    assert_eq!(finished.code, Some(0), "{}", finished.said());
    assert!(
        finished
            .row(&peer.address().to_string())
            .contains("ready by imok only")
    );
    assert!(finished.stderr.contains("WARN"), "{}", finished.said());
    assert!(finished.stderr.contains("does not allow srvr"));
    assert!(
        finished
            .stderr
            .contains("cannot confirm that the server is serving")
    );
    assert!(finished.stderr.contains("4lw.commands.whitelist"));
}

#[test]
fn neither_word_allowed_exits_2_at_once_naming_the_setting() {
    let peer = refusing_peer(false);
    // Without --once: it must not wait for ever for something waiting cannot change.
    let finished = run(
        "zk-wait",
        zk_wait(&["--zookeeper", &peer.address().to_string()]),
        LIMIT,
    );
    assert_eq!(finished.code, Some(2), "{}", finished.said());
    assert!(
        finished.stderr.contains("refuses both srvr and ruok"),
        "{}",
        finished.said()
    );
    assert!(finished.stderr.contains("4lw.commands.whitelist"));
    assert!(
        finished.stdout.contains("cannot judge"),
        "{}",
        finished.said()
    );
}

#[test]
fn bad_input_exits_2_naming_the_bad_part() {
    let cases: &[(&[&str], &str)] = &[
        (&["--zookeeper", ""], "it is empty"),
        (&["--zookeeper", "zk:0"], "port 0"),
        (
            &["--zookeeper", "zk-0:2181,zk-1:70000"],
            "server #2 \"zk-1:70000\": port 70000 is out of range",
        ),
        (
            &["--zookeeper", "zk-0,,zk-1"],
            "server #2 \"\": the entry is empty",
        ),
        (&["--zookeeper", "zk 0"], "is not a host name"),
        (
            &["--zookeeper", "::1"],
            "IPv6 addresses must be written in brackets",
        ),
        (&["--zookeeper", "zk", "--timeout", "5"], "5 has no unit"),
        (
            &["--zookeeper", "zk", "--probe-timeout", "0s"],
            "longer than zero",
        ),
        (
            &["--zookeeper", "zk", "--max-interval", "fast"],
            "invalid duration",
        ),
        (
            &["--zookeeper", "zk", "--require", "most"],
            "possible values: any, majority, all",
        ),
        (
            &["--zookeeper", "zk", "--log-format", "xml"],
            "possible values: text, json",
        ),
        (&[], "--zookeeper <CONNECT>"),
    ];
    for (args, said) in cases {
        let finished = run("zk-wait", zk_wait(args), LIMIT);
        assert_eq!(finished.code, Some(2), "{args:?}: {}", finished.said());
        assert!(
            finished.stderr.contains(said),
            "{args:?} should say {said:?}: {}",
            finished.said()
        );
    }
}

#[test]
fn bad_env_values_are_named_too() {
    let mut command = zk_wait(&[]);
    command.env("ZK_WAIT_ZOOKEEPER", "zk:99999");
    let finished = run("zk-wait", command, LIMIT);
    assert_eq!(finished.code, Some(2), "{}", finished.said());
    assert!(
        finished.stderr.contains("port 99999 is out of range"),
        "{}",
        finished.said()
    );
}

/// Each misbehaving peer, with short bounds: the documented outcome, and no hang.
#[test]
fn bad_peers_give_their_documented_state_and_nothing_hangs() {
    let silent = FakePeer::start(Behaviour::Silent);
    let garbage = FakePeer::start(Behaviour::Answer(
        b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
    ));
    let flood = FakePeer::start(Behaviour::Flood(8 * 1024 * 1024));
    let reset = FakePeer::start(Behaviour::Reset);
    let refused = format!("127.0.0.1:{}", free_port());
    let cases = [
        (
            silent.address().to_string(),
            "timed out waiting for the answer",
        ),
        (
            garbage.address().to_string(),
            "unexpected answer: \"HTTP/1.1 400 Bad Request",
        ),
        (
            flood.address().to_string(),
            "answer larger than 64 KiB: not ZooKeeper",
        ),
        (reset.address().to_string(), "connection reset"),
        (refused.clone(), "connection refused"),
        ("no-such-host.invalid:2181".into(), "unresolvable"),
    ];
    for (server, state) in &cases {
        let started = Instant::now();
        let finished = run(
            "zk-wait",
            zk_wait(&[
                "--zookeeper",
                server,
                "--timeout",
                "1500ms",
                "--probe-timeout",
                "300ms",
            ]),
            LIMIT,
        );
        assert_eq!(finished.code, Some(1), "{server}: {}", finished.said());
        assert!(
            finished.row(server).contains(state),
            "{server} should be {state:?}: {}",
            finished.said()
        );
        assert!(finished.stdout.contains("not ready: 0 of 1 servers ready"));
        // The timeout is honoured, not the probe's bound multiplied by rounds.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{server} took {:?}",
            started.elapsed()
        );
    }
    for peer in [&silent, &garbage, &flood, &reset] {
        assert!(
            peer.accepted() > 0,
            "zk-wait never reached {}",
            peer.address()
        );
    }
}

#[test]
fn json_output_is_one_summary_object_and_json_log_lines() {
    let peer = FakePeer::start(Behaviour::Answer(
        b"This ZooKeeper instance is not currently serving requests\n".to_vec(),
    ));
    let finished = once(&peer.address().to_string(), &["--log-format", "json"]);
    assert_eq!(finished.code, Some(1), "{}", finished.said());
    let summary: serde_json::Value = serde_json::from_str(finished.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {}", finished.said()));
    assert_eq!(summary["verdict"], "not-ready");
    assert_eq!(summary["servers"][0]["state"], "not serving");
    for line in finished.stderr.lines() {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not a JSON line: {line}"
        );
    }
}

#[test]
fn every_flag_can_come_from_the_environment() {
    let server = Ensemble::start_standalone(EnsembleConfig::standalone()).unwrap();
    let mut command = zk_wait(&[]);
    command
        .env(
            "ZK_WAIT_ZOOKEEPER",
            format!("{}/flink", server.connect_string()),
        )
        .env("ZK_WAIT_REQUIRE", "all")
        .env("ZK_WAIT_ONCE", "true")
        .env("ZK_WAIT_TIMEOUT", "30s")
        .env("ZK_WAIT_PROBE_TIMEOUT", "1s")
        .env("ZK_WAIT_MAX_INTERVAL", "100ms")
        .env("ZK_WAIT_LOG_FORMAT", "json")
        .env("ZK_WAIT_VERBOSE", "true");
    let finished = run("zk-wait", command, LIMIT);
    assert_eq!(finished.code, Some(0), "{}", finished.said());
    assert!(
        finished.stdout.contains("\"requirement\":\"all\""),
        "{}",
        finished.said()
    );
    assert!(
        finished.stderr.contains("\"level\":\"DEBUG\""),
        "verbose from env: {}",
        finished.said()
    );
}

#[test]
fn sigterm_and_sigint_end_it_at_once() {
    // A member that takes the connection and never answers holds a probe open.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap().to_string();
    let nobody = format!("127.0.0.1:{}", free_port());
    for (signal, code, member) in [
        ("TERM", 143, &nobody),
        ("INT", 130, &nobody),
        ("TERM", 143, &silent),
    ] {
        let mut waiter =
            Process::spawn("zk-wait", zk_wait(&["--zookeeper", member]), Echo::Quiet).unwrap();
        waiter
            .wait_for_line(LIMIT, |line| line.contains("waiting"))
            .expect("zk-wait logs that it waits");
        waiter.signal(signal).unwrap();
        let status = waiter
            .wait_timeout(Duration::from_secs(2))
            .unwrap()
            .unwrap_or_else(|| panic!("still running 2 s after SIG{signal}"));
        assert_eq!(status.code(), Some(code), "{}", waiter.output());
        assert!(waiter.stderr().contains(&format!("SIG{signal} received")));
    }
}

/// ZooKeeper 3.8 in each whitelist setting, with the AdminServer (Jetty, on its own port) on and
/// off: zk-wait judges by srvr in every case (3.5.3+ always allows it) and shows what ruok said.
#[test]
fn every_whitelist_setting_with_the_admin_server_on_and_off() {
    for admin_server in [false, true] {
        for (whitelist, ruok_column) in [
            (None, "not whitelisted"),
            (Some("srvr,ruok"), "imok"),
            (Some("*"), "imok"),
            (Some("ruok"), "imok"),
        ] {
            let mut config = EnsembleConfig::standalone().admin_server(admin_server);
            if let Some(words) = whitelist {
                config = config.whitelist(words);
            }
            let server = Ensemble::start_standalone(config).unwrap();
            let admin = std::net::TcpStream::connect(("127.0.0.1", server.admin_port(0)));
            assert_eq!(
                admin.is_ok(),
                admin_server,
                "the AdminServer listens only when on"
            );
            let finished = once(&server.connect_string(), &[]);
            let case = format!("whitelist {whitelist:?}, admin server {admin_server}");
            assert_eq!(finished.code, Some(0), "{case}: {}", finished.said());
            let line = finished.row(&server.connect_string());
            assert!(
                line.contains("ready (standalone)") && line.ends_with(ruok_column),
                "{case}: {line}"
            );
        }
    }
}
