//! Driving [`Query`] walks from the node (dht-rpc `lib/query.js` glue in `index.js`): seeding,
//! sending visits with the query retry policy, reply events, DOWN_HINTs with their per-tick
//! rate limit, and the commit phase.

use std::net::SocketAddrV4;

use super::records::{Commit, RecordKind};
use super::rpc::{Owner, RequestSpec};
use super::Node;
use crate::commands::{DOWN_HINT, FIND_NODE};
use crate::config::{stray_node, QUERY_RETRIES, REQUEST_RETRIES, REQUEST_TIMEOUT};
use crate::error::QueryError;
use crate::event::{Event, Reply};
use crate::ids::{NodeId, QueryId};
use crate::query::{Candidate, DownHint, Query};

/// A walk the application starts with [`Node::query`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuerySpec {
    /// The target.
    pub target: [u8; 32],
    /// Internal (dht-rpc) command space.
    pub internal: bool,
    /// Command sent to every visited node.
    pub command: u64,
    /// Value sent with it.
    pub value: Option<Vec<u8>>,
    /// After the walk, re-send the command with each closest node's token (JS `commit: true`).
    pub commit: bool,
    /// Nodes to start from (JS `nodes` / `closestNodes`), closest first.
    pub nodes: Vec<SocketAddrV4>,
    /// Parallel requests (default: the node's concurrency).
    pub concurrency: Option<usize>,
    /// Retransmissions per visit (default 5).
    pub retries: Option<u32>,
}

impl QuerySpec {
    /// FIND_NODE towards `target`.
    pub fn find_node(target: [u8; 32]) -> QuerySpec {
        QuerySpec {
            target,
            internal: true,
            command: FIND_NODE,
            value: None,
            commit: false,
            nodes: Vec::new(),
            concurrency: None,
            retries: None,
        }
    }

    /// An application command towards `target`.
    pub fn external(target: [u8; 32], command: u64, value: Option<Vec<u8>>) -> QuerySpec {
        QuerySpec {
            internal: false,
            command,
            value,
            ..QuerySpec::find_node(target)
        }
    }
}

/// Who started a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum QueryKind {
    User,
    /// A refresh; concurrency drops to 2 while other traffic is in flight.
    Background,
    /// Round 0 or 1 of the bootstrap walk.
    Bootstrap,
    /// A server's announce (FIND_PEER, then ANNOUNCE to the best 3).
    Announcer(u64),
    /// A client's FIND_PEER.
    Connect(crate::ids::ConnId),
}

#[derive(Debug)]
pub(super) struct QueryState {
    pub query: Query,
    pub kind: QueryKind,
    pub spec: QuerySpec,
    retries: u32,
    /// What the commit phase sends.
    pub commit: Commit,
    /// Which records replies carry, to report them as [`Event::RecordFound`].
    pub records: RecordKind,
    /// Commit (or in-walk UNANNOUNCE) requests not settled yet.
    pub commit_pending: usize,
    commit_ok: usize,
    /// The walk is over; waiting for commits.
    walk_done: bool,
}

/// Background walks run at this concurrency (`_backgroundQuery`: min(c, max(2, c / 8))).
fn background_concurrency(c: usize) -> usize {
    c.min((c / 8).max(2))
}

impl Node {
    pub(super) fn start_query(&mut self, spec: QuerySpec, kind: QueryKind) -> u64 {
        let commit = if spec.commit {
            Commit::Same
        } else {
            Commit::None
        };
        self.start_query_with(spec, kind, commit, RecordKind::None)
    }

    pub(super) fn start_query_with(
        &mut self,
        spec: QuerySpec,
        kind: QueryKind,
        commit: Commit,
        records: RecordKind,
    ) -> u64 {
        let id = self.next_query_id();
        self.stats.queries_total += 1;
        let concurrency = match kind {
            QueryKind::User => spec.concurrency.unwrap_or(self.config.concurrency),
            QueryKind::Background | QueryKind::Bootstrap => {
                background_concurrency(self.config.concurrency)
            }
            QueryKind::Announcer(_) | QueryKind::Connect(_) => self.config.concurrency,
        };
        let mut query = Query::new(NodeId(spec.target), concurrency, *self.table.id());
        let seeds: Vec<Candidate> = spec
            .nodes
            .iter()
            .map(|a| Candidate::from_addr(*a))
            .collect();
        query.seed(&seeds);
        query.add_from_table(&self.table);
        if query.needs_bootstrap() {
            query.add_bootstrap(&self.config.bootstrap);
        }
        let retries = spec.retries.unwrap_or(QUERY_RETRIES);
        self.queries.insert(
            id,
            QueryState {
                query,
                kind,
                spec,
                retries,
                commit,
                records,
                commit_pending: 0,
                commit_ok: 0,
                walk_done: false,
            },
        );
        self.drive_query(id);
        id
    }

    /// `_readMore`: sends the visits the walk wants and moves on when it is over.
    fn drive_query(&mut self, id: u64) {
        let Some(state) = self.queries.get_mut(&id) else {
            return;
        };
        let step = state.query.read_more(&self.table);
        let spec = RequestSpec {
            internal: state.spec.internal,
            command: state.spec.command,
            target: Some(state.spec.target),
            value: state.spec.value.clone(),
            token: None,
            retry: true,
            timeout: None,
            socket: None,
        };
        let retries = state.retries;
        for c in step.visits {
            if self
                .create_request(
                    c.addr,
                    Some(c.id),
                    &spec,
                    Owner::Query(id),
                    retries,
                    REQUEST_TIMEOUT,
                    false,
                )
                .is_none()
            {
                self.fail_query(id, QueryError::Destroyed);
                return;
            }
        }
        if step.done {
            self.end_walk(id);
        }
    }

    pub(super) fn on_query_cycle(&mut self, id: u64) {
        if let Some(state) = self.queries.get_mut(&id) {
            state.query.on_cycle();
            self.drive_query(id);
        }
    }

    pub(super) fn on_query_reply(&mut self, id: u64, reply: Reply, went_slow: bool) {
        let filter = self.config.filter_stray_nodes;
        let in_flight = self.requests.len();
        let full_concurrency = self.config.concurrency;
        let Some(state) = self.queries.get_mut(&id) else {
            return;
        };
        let finished = state.query.is_finished();
        let hints = state
            .query
            .on_reply(&reply, went_slow, |a| !(filter && stray_node(a)));
        if finished {
            return;
        }
        let kind = state.kind;
        if reply.error == 0 {
            if matches!(kind, QueryKind::Background | QueryKind::Bootstrap) {
                // Yield to other traffic (`_backgroundQuery` on 'data').
                state.query.concurrency = if in_flight < 3 {
                    full_concurrency
                } else {
                    background_concurrency(full_concurrency)
                };
            }
            match kind {
                QueryKind::User => {
                    self.on_record_reply(id, &reply);
                    self.push_event(Event::QueryReply {
                        id: QueryId(id),
                        reply: reply.clone(),
                    })
                }
                QueryKind::Bootstrap => self.on_bootstrap_data(&reply),
                QueryKind::Connect(c) => self.on_connect_record(c, &reply),
                QueryKind::Announcer(_) => {}
                QueryKind::Background => {}
            }
        }
        self.send_down_hints(hints);
        self.drive_query(id);
    }

    pub(super) fn on_query_error(
        &mut self,
        id: u64,
        to: SocketAddrV4,
        timeout: bool,
        went_slow: bool,
    ) {
        let Some(state) = self.queries.get_mut(&id) else {
            return;
        };
        let hints = state.query.on_error(to, timeout, went_slow);
        self.send_down_hints(hints);
        self.drive_query(id);
    }

    /// `_downHint`, with the per-tick rate limit.
    fn send_down_hints(&mut self, hints: Vec<DownHint>) {
        if !self.config.send_down_hints {
            return;
        }
        for h in hints {
            if let Some(limit) = self.config.down_hints_rate_limit {
                if self.down_hints_this_tick >= limit {
                    return;
                }
            }
            self.down_hints_this_tick += 1;
            let mut spec = RequestSpec::internal(DOWN_HINT);
            let mut value = Vec::with_capacity(6);
            crate::wire::compact::write_ipv4_address(&mut value, &h.down);
            spec.value = Some(value);
            self.send_request(h.to.addr, None, spec, Owner::DownHint);
        }
    }

    /// `_flush`: commit or finish.
    fn end_walk(&mut self, id: u64) {
        let Some(state) = self.queries.get_mut(&id) else {
            return;
        };
        state.walk_done = true;
        if matches!(state.commit, Commit::None) {
            self.finish_query(id, Ok(()));
            return;
        }
        let targets: Vec<Reply> = state.query.closest_replies.clone();
        if targets.is_empty() {
            self.fail_query(id, QueryError::TooFewNodes);
            return;
        }
        if matches!(state.commit, Commit::Unannounce { .. }) {
            // The UNANNOUNCEs went out during the walk; every closest reply counts as committed
            // once they settle (`lookupAndUnannounce`'s commit awaits them).
            state.commit_ok += targets.len();
            if state.commit_pending == 0 {
                self.finish_query(id, Ok(()));
            }
            return;
        }
        let targets: Vec<Reply> = if matches!(state.commit, Commit::AnnounceSelf { .. }) {
            targets
                .into_iter()
                .take(super::server::ANNOUNCE_RELAYS)
                .collect()
        } else {
            targets
        };
        state.commit_pending += targets.len();
        for r in targets {
            let request = r.token.and_then(|token| {
                let state = self.queries.get(&id)?;
                let (command, value) = self.commit_value(state, &r, &token)?;
                Some(RequestSpec {
                    internal: state.spec.internal,
                    command,
                    target: Some(state.spec.target),
                    value: Some(value),
                    token: Some(token),
                    retry: true,
                    timeout: None,
                    socket: None,
                })
            });
            let sent = request.is_some_and(|req| {
                self.create_request(
                    r.from,
                    None,
                    &req,
                    Owner::Commit(id),
                    REQUEST_RETRIES,
                    REQUEST_TIMEOUT,
                    false,
                )
                .is_some()
            });
            if !sent {
                self.on_commit_done(id, None);
            }
        }
    }

    /// A commit request settled (`reply` is `None` when it failed).
    pub(super) fn on_commit_done(&mut self, id: u64, reply: Option<Reply>) {
        let Some(state) = self.queries.get_mut(&id) else {
            return;
        };
        state.commit_pending = state.commit_pending.saturating_sub(1);
        if reply.is_some() && !matches!(state.commit, Commit::Unannounce { .. }) {
            state.commit_ok += 1;
        }
        let settled = state.walk_done && state.commit_pending == 0;
        let ok = state.commit_ok > 0;
        match (reply, state.kind) {
            (Some(reply), QueryKind::User) => self.push_event(Event::CommitReply {
                id: QueryId(id),
                reply,
            }),
            (Some(reply), QueryKind::Announcer(s)) => self.on_announce_committed(s, &reply),
            _ => {}
        }
        if settled {
            self.finish_query(
                id,
                if ok {
                    Ok(())
                } else {
                    Err(QueryError::CommitFailed)
                },
            );
        }
    }

    pub(super) fn fail_query(&mut self, id: u64, err: QueryError) {
        self.finish_query(id, Err(err));
    }

    fn finish_query(&mut self, id: u64, result: Result<(), QueryError>) {
        let Some(state) = self.queries.remove(&id) else {
            return;
        };
        match state.kind {
            QueryKind::User => {
                let result = result.map(|()| state.query.closest_replies);
                self.push_event(Event::QueryFinished {
                    id: QueryId(id),
                    result,
                });
            }
            QueryKind::Bootstrap => self.on_bootstrap_walk_done(),
            QueryKind::Background => {}
            QueryKind::Announcer(s) => {
                let closest = state.query.closest_replies.iter().map(|r| r.from).collect();
                self.on_announce_done(s, closest);
            }
            QueryKind::Connect(c) => self.on_connect_query_done(c),
        }
    }

    /// `_backgroundQuery` towards `target`.
    pub(super) fn background_query(&mut self, target: NodeId, kind: QueryKind) -> u64 {
        self.refresh_ticks = crate::config::REFRESH_TICKS;
        self.start_query(QuerySpec::find_node(target.0), kind)
    }
}
