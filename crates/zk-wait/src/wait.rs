//! The wait itself: rounds of probes over every server, paced by a jittered exponential
//! backoff, with a progress line every few seconds and a summary at the end.

use crate::connect_string::Server;
use crate::four_letter::Word;
use crate::probe::{ask, resolve};
use crate::quorum::Requirement;
use crate::report::{ServerRound, Summary, Verdict, count_ready, progress_line};
use crate::state::{RuokSeen, ServerState, judge};
use backon::{BackoffBuilder, ExponentialBuilder};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{debug, info, warn};

/// Everything that shapes a wait; the CLI fills it.
#[derive(Debug, Clone)]
pub struct WaitOptions {
    pub servers: Vec<Server>,
    pub requirement: Requirement,
    /// Give up after this long; `None` waits for ever.
    pub timeout: Option<Duration>,
    /// One round only.
    pub once: bool,
    /// Bounds each of resolving, connecting and reading an answer.
    pub probe_timeout: Duration,
    /// The longest pause between rounds.
    pub max_interval: Duration,
    /// At most one progress line this often.
    pub progress_every: Duration,
}

/// How the wait ended, with the summary to show.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub summary: Summary,
}

impl Outcome {
    /// 0 ready, 1 not ready (timeout or `--once`), 2 cannot judge (a configuration problem,
    /// like bad input: waiting changes nothing).
    pub fn exit_code(&self) -> u8 {
        match self.summary.verdict {
            Verdict::Ready => 0,
            Verdict::NotReady => 1,
            Verdict::CannotJudge => 2,
        }
    }
}

/// The first pause between rounds; later ones double up to half of `max_interval`, and jitter
/// adds up to as much again, so no pause exceeds `max_interval`.
const FIRST_PAUSE: Duration = Duration::from_millis(20);

/// Waits until `options.requirement` holds, the timeout passes, or (with `once`) one round
/// is done.
pub async fn wait(options: &WaitOptions) -> Outcome {
    let started = Instant::now();
    let deadline = options.timeout.map(|timeout| started + timeout);
    let half_interval = options.max_interval / 2;
    let mut pauses = ExponentialBuilder::default()
        .with_min_delay(FIRST_PAUSE.min(half_interval))
        .with_max_delay(half_interval)
        .with_jitter()
        .without_max_times()
        .build();
    let mut memory = Memory::default();
    let mut rounds: Vec<ServerRound> = options
        .servers
        .iter()
        .map(|server| ServerRound {
            server: server.clone(),
            address: None,
            state: ServerState::NotProbed,
            ruok: RuokSeen::NotAsked,
        })
        .collect();
    let mut next_progress = started;
    let finish = |verdict, rounds: &[ServerRound]| Outcome {
        summary: Summary::new(verdict, options.requirement, rounds, started.elapsed()),
    };

    info!(
        servers = options.servers.len(),
        requirement = %options.requirement,
        needed = options.requirement.needed(options.servers.len()),
        "waiting for ZooKeeper to serve"
    );
    loop {
        let round = probe_round(options, &memory);
        rounds = match deadline {
            Some(deadline) => tokio::select! {
                fresh = round => fresh,
                () = sleep_until(deadline) => return finish(Verdict::NotReady, &rounds),
            },
            None => round.await,
        };
        memory.learn(&rounds);

        if let Some(stuck) = rounds.iter().find(|r| r.state == ServerState::Unjudgeable) {
            warn!(
                server = %stuck.server,
                "{} refuses both srvr and ruok (4lw.commands.whitelist), so no wait can ever tell \
                 whether it serves; allow srvr there (e.g. 4lw.commands.whitelist=srvr,ruok)",
                stuck.server
            );
            return finish(Verdict::CannotJudge, &rounds);
        }
        if options
            .requirement
            .holds(count_ready(&rounds), rounds.len())
        {
            info!(
                "ZooKeeper is serving: {}",
                progress_line(&rounds, options.requirement)
            );
            return finish(Verdict::Ready, &rounds);
        }
        if options.once {
            return finish(Verdict::NotReady, &rounds);
        }
        let now = Instant::now();
        if now >= next_progress {
            info!("waiting: {}", progress_line(&rounds, options.requirement));
            next_progress = now + options.progress_every;
        }
        let pause = pauses.next().unwrap_or(options.max_interval);
        match deadline {
            Some(deadline) if now + pause >= deadline => {
                sleep_until(deadline).await;
                return finish(Verdict::NotReady, &rounds);
            }
            _ => sleep(pause).await,
        }
    }
}

/// What earlier rounds taught: which servers refuse `ruok` (not asked again) and which
/// whitelist refusals were already reported (each is said once).
#[derive(Default)]
struct Memory {
    ruok_refused: HashSet<Server>,
    reported: HashSet<(Server, Word)>,
}

impl Memory {
    fn learn(&mut self, rounds: &[ServerRound]) {
        for round in rounds {
            if round.ruok == RuokSeen::NotWhitelisted {
                self.ruok_refused.insert(round.server.clone());
                if self.reported.insert((round.server.clone(), Word::Ruok)) {
                    info!(
                        server = %round.server,
                        "{} does not allow ruok (not in 4lw.commands.whitelist); readiness is \
                         judged by srvr alone, which is the stronger check. Add ruok to \
                         4lw.commands.whitelist to also see imok.",
                        round.server
                    );
                }
            }
            if round.state == ServerState::ImokOnly
                && self.reported.insert((round.server.clone(), Word::Srvr))
            {
                warn!(
                    server = %round.server,
                    "{} does not allow srvr (not in 4lw.commands.whitelist), so zk-wait falls back \
                     to ruok; imok cannot confirm that the server is serving (a member without a \
                     quorum also says imok). Add srvr to 4lw.commands.whitelist.",
                    round.server
                );
            }
        }
    }
}

/// Probes every server at once.
async fn probe_round(options: &WaitOptions, memory: &Memory) -> Vec<ServerRound> {
    let mut tasks = JoinSet::new();
    for (index, server) in options.servers.iter().enumerate() {
        let server = server.clone();
        let ruok_refused = memory.ruok_refused.contains(&server);
        let limit = options.probe_timeout;
        tasks.spawn(async move { (index, probe_server(server, ruok_refused, limit).await) });
    }
    let mut rounds: Vec<Option<ServerRound>> = vec![None; options.servers.len()];
    while let Some(joined) = tasks.join_next().await {
        // A probe task only panics on a bug; let it surface rather than report a state.
        let (index, round) = joined.expect("a probe task panicked");
        rounds[index] = Some(round);
    }
    rounds.into_iter().flatten().collect()
}

/// Resolves one server and probes each of its addresses; the server shows its best address.
async fn probe_server(server: Server, ruok_refused: bool, limit: Duration) -> ServerRound {
    let addresses = match resolve(&server, limit).await {
        Ok(addresses) => addresses,
        Err(why) => {
            debug!(%server, %why, "unresolvable");
            return ServerRound {
                server,
                address: None,
                state: ServerState::Unresolvable(why),
                ruok: RuokSeen::NotAsked,
            };
        }
    };
    let mut tasks = JoinSet::new();
    for address in addresses {
        tasks.spawn(probe_address(address, ruok_refused, limit));
    }
    let mut best: Option<(SocketAddr, ServerState, RuokSeen)> = None;
    while let Some(joined) = tasks.join_next().await {
        let (address, state, ruok) = joined.expect("a probe task panicked");
        debug!(%server, %address, %state, ruok = ruok.as_str(), "probed");
        if best
            .as_ref()
            .is_none_or(|(_, shown, _)| state.better_than(shown))
        {
            best = Some((address, state, ruok));
        }
    }
    let (address, state, ruok) = best.expect("resolve returns at least one address");
    ServerRound {
        server,
        address: Some(address),
        state,
        ruok,
    }
}

async fn probe_address(
    address: SocketAddr,
    ruok_refused: bool,
    limit: Duration,
) -> (SocketAddr, ServerState, RuokSeen) {
    let ask_ruok = async {
        if ruok_refused {
            None
        } else {
            Some(ask(address, Word::Ruok, limit).await)
        }
    };
    let (srvr, ruok) = tokio::join!(ask(address, Word::Srvr, limit), ask_ruok);
    let state = judge(&srvr, ruok.as_ref(), ruok_refused);
    let ruok_seen = if ruok_refused {
        RuokSeen::NotWhitelisted
    } else {
        RuokSeen::from_exchange(ruok.as_ref())
    };
    (address, state, ruok_seen)
}
