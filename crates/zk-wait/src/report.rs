//! What zk-wait tells people: the progress line while it waits and the summary when it ends.
//! Pure: it formats round results; the caller writes them.

use crate::connect_string::Server;
use crate::quorum::Requirement;
use crate::state::{RuokSeen, ServerState};
use serde::Serialize;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

/// One server after the latest round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRound {
    pub server: Server,
    /// The address whose state is shown; none when unresolvable or not probed.
    pub address: Option<SocketAddr>,
    pub state: ServerState,
    pub ruok: RuokSeen,
}

/// How the wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Ready,
    NotReady,
    CannotJudge,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Ready => "ready",
            Verdict::NotReady => "not ready",
            Verdict::CannotJudge => "cannot judge",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub verdict: Verdict,
    pub requirement: Requirement,
    pub ready: usize,
    pub needed: usize,
    pub total: usize,
    pub elapsed_ms: u64,
    pub servers: Vec<ServerRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerRow {
    pub server: String,
    pub address: Option<String>,
    pub ready: bool,
    pub state: String,
    pub ruok: &'static str,
}

impl Summary {
    pub fn new(
        verdict: Verdict,
        requirement: Requirement,
        rounds: &[ServerRound],
        elapsed: Duration,
    ) -> Summary {
        let total = rounds.len();
        Summary {
            verdict,
            requirement,
            ready: count_ready(rounds),
            needed: requirement.needed(total),
            total,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            servers: rounds
                .iter()
                .map(|round| ServerRow {
                    server: round.server.to_string(),
                    address: round.address.map(|a| a.to_string()),
                    ready: round.state.is_ready(),
                    state: round.state.to_string(),
                    ruok: round.ruok.as_str(),
                })
                .collect(),
        }
    }

    /// A table a person reads at a glance, then the verdict.
    pub fn to_text(&self) -> String {
        let header = ["SERVER", "ADDRESS", "STATE", "RUOK"];
        let rows: Vec<[&str; 4]> = self
            .servers
            .iter()
            .map(|row| {
                [
                    row.server.as_str(),
                    row.address.as_deref().unwrap_or("-"),
                    row.state.as_str(),
                    row.ruok,
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&rows) {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{}: {} of {} servers ready, {} needs {} (after {})",
            self.verdict.as_str(),
            self.ready,
            self.total,
            self.requirement,
            self.needed,
            seconds(Duration::from_millis(self.elapsed_ms)),
        );
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a summary of strings and numbers always serialises")
    }
}

pub fn count_ready(rounds: &[ServerRound]) -> usize {
    rounds.iter().filter(|round| round.state.is_ready()).count()
}

/// One line naming every server and its state, for the log while waiting.
pub fn progress_line(rounds: &[ServerRound], requirement: Requirement) -> String {
    let total = rounds.len();
    let mut line = format!(
        "{} of {} servers ready, {} needs {}:",
        count_ready(rounds),
        total,
        requirement,
        requirement.needed(total)
    );
    for (index, round) in rounds.iter().enumerate() {
        let separator = if index == 0 { " " } else { "; " };
        let _ = write!(line, "{separator}{} {}", round.server, round.state);
        if round.ruok == RuokSeen::Imok && !round.state.is_ready() {
            line.push_str(" (imok)");
        }
    }
    line
}

fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect_string::parse;
    use crate::four_letter::Mode;
    use crate::state::Failure;

    fn rounds() -> Vec<ServerRound> {
        let servers = parse("zk-0.zk-hs:2181,zk-1.zk-hs:2181,zk-2.zk-hs:2181")
            .unwrap()
            .servers;
        let states = [
            (
                ServerState::Serving {
                    mode: Mode::Leader,
                    version: None,
                },
                RuokSeen::Imok,
            ),
            (ServerState::NotServing, RuokSeen::Imok),
            (
                ServerState::Unreachable(Failure::Refused),
                RuokSeen::NoAnswer,
            ),
        ];
        servers
            .into_iter()
            .zip(states)
            .enumerate()
            .map(|(i, (server, (state, ruok)))| ServerRound {
                server,
                address: Some(format!("10.0.0.{}:2181", i + 1).parse().unwrap()),
                state,
                ruok,
            })
            .collect()
    }

    #[test]
    fn progress_names_each_server_and_marks_imok_without_serving() {
        assert_eq!(
            progress_line(&rounds(), Requirement::Majority),
            "1 of 3 servers ready, majority needs 2: zk-0.zk-hs:2181 ready (leader); \
             zk-1.zk-hs:2181 not serving (imok); zk-2.zk-hs:2181 connection refused"
        );
    }

    #[test]
    fn the_table_lines_up_and_ends_with_the_verdict() {
        let summary = Summary::new(
            Verdict::NotReady,
            Requirement::Majority,
            &rounds(),
            Duration::from_millis(2500),
        );
        let expected = "\
SERVER           ADDRESS        STATE               RUOK
zk-0.zk-hs:2181  10.0.0.1:2181  ready (leader)      imok
zk-1.zk-hs:2181  10.0.0.2:2181  not serving         imok
zk-2.zk-hs:2181  10.0.0.3:2181  connection refused  no answer
not ready: 1 of 3 servers ready, majority needs 2 (after 2.5s)
";
        assert_eq!(summary.to_text(), expected);
    }

    #[test]
    fn json_carries_the_same_facts() {
        let summary = Summary::new(
            Verdict::Ready,
            Requirement::Any,
            &rounds(),
            Duration::from_millis(10),
        );
        let json: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap();
        assert_eq!(json["verdict"], "ready");
        assert_eq!(json["requirement"], "any");
        assert_eq!(json["needed"], 1);
        assert_eq!(json["servers"][1]["state"], "not serving");
        assert_eq!(json["servers"][1]["ruok"], "imok");
        assert_eq!(json["servers"][0]["ready"], true);
    }
}
