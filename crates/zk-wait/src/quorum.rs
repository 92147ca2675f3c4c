//! How many servers must be ready before zk-wait lets the pod go on. Pure.

use clap::ValueEnum;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Requirement {
    /// One server serving. A member serves only while its ensemble has a quorum, so even
    /// this means the ensemble can take writes.
    Any,
    /// More than half of the listed servers serving: what a ZooKeeper client needs to ride out
    /// the loss of any one of them.
    Majority,
    /// Every listed server serving.
    All,
}

impl Requirement {
    /// How many of `total` servers must be ready.
    pub fn needed(self, total: usize) -> usize {
        match self {
            Requirement::Any => total.min(1),
            Requirement::Majority => total / 2 + 1,
            Requirement::All => total,
        }
    }

    pub fn holds(self, ready: usize, total: usize) -> bool {
        total > 0 && ready >= self.needed(total)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Requirement::Any => "any",
            Requirement::Majority => "majority",
            Requirement::All => "all",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Requirement::*;

    #[test]
    fn majority_is_more_than_half() {
        let needed: Vec<usize> = (1..=6).map(|n| Majority.needed(n)).collect();
        assert_eq!(needed, [1, 2, 2, 3, 3, 4]);
    }

    #[test]
    fn any_and_all() {
        assert_eq!(Any.needed(5), 1);
        assert_eq!(All.needed(5), 5);
        assert!(Any.holds(1, 3));
        assert!(!All.holds(2, 3));
        assert!(All.holds(3, 3));
    }

    #[test]
    fn a_lone_member_of_three_is_no_majority() {
        assert!(!Majority.holds(1, 3));
        assert!(Majority.holds(2, 3));
    }

    #[test]
    fn nothing_holds_over_no_servers() {
        for requirement in [Any, Majority, All] {
            assert!(!requirement.holds(0, 0));
        }
    }
}
