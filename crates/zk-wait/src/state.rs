//! One server's state after a round, judged from the answers its addresses gave. Pure.

use crate::four_letter::{Mode, Reply};
use serde::Serialize;
use std::fmt;

/// Why an exchange with an address gave no answer to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens there (yet).
    Refused,
    /// No TCP connection within the probe timeout.
    ConnectTimeout,
    /// Connected, but the answer did not end within the probe timeout.
    AnswerTimeout,
    /// The server reset the connection.
    Reset,
    /// The answer went past the read cap: not a ZooKeeper server.
    TooLarge {
        limit: usize,
    },
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused => f.write_str("connection refused"),
            Failure::ConnectTimeout => f.write_str("timed out connecting"),
            Failure::AnswerTimeout => f.write_str("timed out waiting for the answer"),
            Failure::Reset => f.write_str("connection reset"),
            Failure::TooLarge { limit } => {
                write!(f, "answer larger than {} KiB: not ZooKeeper", limit / 1024)
            }
            Failure::Other(message) => f.write_str(message),
        }
    }
}

/// The result of asking one word at one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    Answered(Reply),
    Failed(Failure),
}

/// One server's state for one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerState {
    /// No round has finished for it yet.
    NotProbed,
    Unresolvable(String),
    Serving {
        mode: Mode,
        version: Option<String>,
    },
    /// `srvr` is refused by the whitelist and `ruok` said `imok`: taken as ready, with a
    /// warning, because that is the best this server lets anyone see.
    ImokOnly,
    /// Answers, but in a mode that does not serve clients (read-only, or unknown).
    ServingOtherMode(Mode),
    /// Alive and not in a quorum.
    NotServing,
    Unreachable(Failure),
    Unexpected(String),
    /// Both words are refused by the whitelist: no round can ever judge this server.
    Unjudgeable,
}

impl ServerState {
    pub fn is_ready(&self) -> bool {
        matches!(self, ServerState::Serving { .. } | ServerState::ImokOnly)
    }

    /// Orders states from least to most informative, to pick the one to show for a server
    /// whose name resolved to several addresses.
    fn rank(&self) -> u8 {
        match self {
            ServerState::NotProbed => 0,
            ServerState::Unresolvable(_) => 1,
            ServerState::Unreachable(_) => 2,
            ServerState::Unexpected(_) => 3,
            ServerState::Unjudgeable => 4,
            ServerState::NotServing => 5,
            ServerState::ServingOtherMode(_) => 6,
            ServerState::ImokOnly => 7,
            ServerState::Serving { .. } => 8,
        }
    }

    /// Whether this state beats `other` as the one to show and count for a server.
    pub fn better_than(&self, other: &ServerState) -> bool {
        self.rank() > other.rank()
    }
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerState::NotProbed => f.write_str("not probed yet"),
            ServerState::Unresolvable(why) => write!(f, "unresolvable: {why}"),
            ServerState::Serving { mode, .. } => write!(f, "ready ({mode})"),
            ServerState::ImokOnly => f.write_str("ready by imok only (srvr not whitelisted)"),
            ServerState::ServingOtherMode(mode) => write!(f, "not ready: mode {mode}"),
            ServerState::NotServing => f.write_str("not serving"),
            ServerState::Unreachable(failure) => write!(f, "{failure}"),
            ServerState::Unexpected(excerpt) => write!(f, "unexpected answer: {excerpt}"),
            ServerState::Unjudgeable => f.write_str("srvr and ruok both not whitelisted"),
        }
    }
}

/// What `ruok` told, shown beside the state but never alone taken as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuokSeen {
    /// Not asked (not reached, or known to be refused from an earlier round).
    NotAsked,
    Imok,
    NotWhitelisted,
    NoAnswer,
    Unexpected,
}

impl RuokSeen {
    pub fn from_exchange(exchange: Option<&Exchange>) -> RuokSeen {
        match exchange {
            None => RuokSeen::NotAsked,
            Some(Exchange::Answered(Reply::Imok)) => RuokSeen::Imok,
            Some(Exchange::Answered(Reply::NotWhitelisted { .. })) => RuokSeen::NotWhitelisted,
            Some(Exchange::Failed(_)) => RuokSeen::NoAnswer,
            Some(Exchange::Answered(_)) => RuokSeen::Unexpected,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RuokSeen::NotAsked => "-",
            RuokSeen::Imok => "imok",
            RuokSeen::NotWhitelisted => "not whitelisted",
            RuokSeen::NoAnswer => "no answer",
            RuokSeen::Unexpected => "unexpected",
        }
    }
}

/// Judges one address from its `srvr` exchange and, where asked, its `ruok` exchange.
/// `ruok_known_refused` says an earlier round saw `ruok` refused here, so it was not asked.
pub fn judge(srvr: &Exchange, ruok: Option<&Exchange>, ruok_known_refused: bool) -> ServerState {
    match srvr {
        Exchange::Failed(failure) => ServerState::Unreachable(failure.clone()),
        Exchange::Answered(Reply::Serving { mode, version }) if mode.serves_clients() => {
            ServerState::Serving {
                mode: mode.clone(),
                version: version.clone(),
            }
        }
        Exchange::Answered(Reply::Serving { mode, .. }) => {
            ServerState::ServingOtherMode(mode.clone())
        }
        Exchange::Answered(Reply::NotServing) => ServerState::NotServing,
        Exchange::Answered(Reply::NotWhitelisted { .. }) => match ruok {
            Some(Exchange::Answered(Reply::Imok)) => ServerState::ImokOnly,
            Some(Exchange::Answered(Reply::NotWhitelisted { .. })) => ServerState::Unjudgeable,
            None if ruok_known_refused => ServerState::Unjudgeable,
            // Not asked: only happens when the caller chose not to; nothing to judge by.
            None => ServerState::Unexpected("srvr refused and ruok not asked".into()),
            Some(Exchange::Failed(failure)) => ServerState::Unreachable(failure.clone()),
            Some(Exchange::Answered(other)) => ServerState::Unexpected(describe(other)),
        },
        Exchange::Answered(other) => ServerState::Unexpected(describe(other)),
    }
}

fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Empty => "the connection closed with no answer".into(),
        Reply::Unexpected { excerpt } => format!("\"{excerpt}\""),
        Reply::Imok => "imok to srvr".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::four_letter::{Word, parse_reply};

    fn answered(word: Word, text: &str) -> Exchange {
        Exchange::Answered(parse_reply(word, text.as_bytes()))
    }

    const SRVR_STANDALONE: &str =
        include_str!("../../../tests/fixtures/zookeeper-3.8.0/srvr-standalone.txt");
    const SRVR_NOT_SERVING: &str =
        include_str!("../../../tests/fixtures/zookeeper-3.8.0/srvr-not-serving.txt");
    const REFUSED: &str =
        include_str!("../../../tests/fixtures/zookeeper-3.8.0/stat-not-whitelisted.txt");

    #[test]
    fn serving_is_ready_whatever_ruok_says() {
        let srvr = answered(Word::Srvr, SRVR_STANDALONE);
        let ruok_refused = answered(Word::Ruok, &REFUSED.replace("stat", "ruok"));
        for ruok in [None, Some(&ruok_refused)] {
            assert!(judge(&srvr, ruok, false).is_ready());
        }
    }

    #[test]
    fn a_lone_member_saying_imok_is_not_ready() {
        let state = judge(
            &answered(Word::Srvr, SRVR_NOT_SERVING),
            Some(&answered(Word::Ruok, "imok")),
            false,
        );
        assert_eq!(state, ServerState::NotServing);
        assert!(!state.is_ready());
    }

    #[test]
    fn srvr_refused_falls_back_to_imok() {
        let srvr = answered(Word::Srvr, &REFUSED.replace("stat", "srvr"));
        assert_eq!(
            judge(&srvr, Some(&answered(Word::Ruok, "imok")), false),
            ServerState::ImokOnly
        );
        assert!(ServerState::ImokOnly.is_ready());
    }

    #[test]
    fn both_refused_can_never_be_judged() {
        let srvr = answered(Word::Srvr, &REFUSED.replace("stat", "srvr"));
        let ruok = answered(Word::Ruok, &REFUSED.replace("stat", "ruok"));
        assert_eq!(judge(&srvr, Some(&ruok), false), ServerState::Unjudgeable);
        assert_eq!(judge(&srvr, None, true), ServerState::Unjudgeable);
    }

    #[test]
    fn read_only_mode_is_not_ready() {
        let srvr = answered(
            Word::Srvr,
            &SRVR_STANDALONE.replace("Mode: standalone", "Mode: read-only"),
        );
        let state = judge(&srvr, None, false);
        assert_eq!(state, ServerState::ServingOtherMode(Mode::ReadOnly));
        assert!(!state.is_ready());
    }

    #[test]
    fn failures_and_garbage_are_not_ready() {
        let refused = judge(&Exchange::Failed(Failure::Refused), None, false);
        assert_eq!(refused.to_string(), "connection refused");
        let garbage = judge(&answered(Word::Srvr, "hello"), None, false);
        assert_eq!(garbage.to_string(), "unexpected answer: \"hello\"");
        let empty = judge(&answered(Word::Srvr, ""), None, false);
        assert_eq!(
            empty.to_string(),
            "unexpected answer: the connection closed with no answer"
        );
        assert!(!refused.is_ready() && !garbage.is_ready() && !empty.is_ready());
    }

    #[test]
    fn the_best_address_wins() {
        let serving = ServerState::Serving {
            mode: Mode::Follower,
            version: None,
        };
        assert!(serving.better_than(&ServerState::NotServing));
        assert!(ServerState::NotServing.better_than(&ServerState::Unreachable(Failure::Reset)));
        assert!(!ServerState::NotProbed.better_than(&ServerState::Unresolvable("x".into())));
    }

    #[test]
    fn ruok_column() {
        assert_eq!(RuokSeen::from_exchange(None), RuokSeen::NotAsked);
        assert_eq!(
            RuokSeen::from_exchange(Some(&answered(Word::Ruok, "imok"))),
            RuokSeen::Imok
        );
        assert_eq!(
            RuokSeen::from_exchange(Some(&Exchange::Failed(Failure::Reset))),
            RuokSeen::NoAnswer
        );
    }
}
