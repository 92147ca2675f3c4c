//! Free loopback ports for servers a test starts. The kernel picks a free port; the set below
//! keeps one process from handing the same port out twice before a server has bound it.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("binding 127.0.0.1:0 works on any machine with loopback");
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
}
