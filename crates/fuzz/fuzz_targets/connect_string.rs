//! zk-wait's connect string parser, on any text: it must answer Ok or Err, never panic, and an
//! Ok must be something zk-wait can probe.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zk_wait::connect_string::{ConnectString, parse};

fuzz_target!(|data: &[u8]| {
    // The connect string reaches zk-wait as a flag or an env var: always text.
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    match parse(input) {
        Ok(parsed) => check_parsed(&parsed),
        // The message is what the operator reads; building it must not panic either.
        Err(error) => drop(error.to_string()),
    }
});

fn check_parsed(parsed: &ConnectString) {
    assert!(
        !parsed.servers.is_empty(),
        "an accepted connect string names a server"
    );
    for (index, server) in parsed.servers.iter().enumerate() {
        assert_ne!(server.port, 0, "port 0 accepted in {server}");
        assert!(
            !parsed.servers[..index].contains(server),
            "duplicate server {server} kept"
        );
    }
    if let Some(chroot) = &parsed.chroot {
        assert!(
            chroot.starts_with('/') && chroot.len() > 1,
            "chroot {chroot:?}"
        );
        assert!(!chroot.ends_with('/'), "chroot {chroot:?} ends with '/'");
    }
    // What zk-wait prints must read back as the same servers: the table and the logs name a
    // server the way an operator would write it.
    let servers: Vec<String> = parsed.servers.iter().map(ToString::to_string).collect();
    let printed = format!(
        "{}{}",
        servers.join(","),
        parsed.chroot.as_deref().unwrap_or("")
    );
    match parse(&printed) {
        Ok(reparsed) => assert_eq!(&reparsed, parsed, "{printed:?} reads back differently"),
        Err(error) => panic!("{printed:?}, printed from a parsed string, is refused: {error}"),
    }
}
