//! Domain lifecycle events for `GET /v1/events`: one shared poller, many subscribers.
//!
//! The [`Hub`] runs one poller task only while at least one subscriber exists: every
//! [`POLL_INTERVAL`] (or at once after a lifecycle call, [`Hub::poke`]) it lists the
//! backend's domains, compares each state with the previous round, and broadcasts one
//! [`Event`] per change ([`transition`]). The first round after the poller starts only
//! records states. Subscribers get the events of every domain and filter them themselves
//! (authorization is per identity, see `api::events`); a subscriber too slow to keep up
//! loses the oldest events ([`broadcast`] `Lagged`) but keeps streaming. The poller stops
//! when the last subscriber leaves and when the gateway begins to stop.
//!
//! Backends stay as they are (no event API in the trait): polling works the same for QEMU
//! and libvirt, and a change shorter than the interval may go unnoticed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;
use virtgate_proto::{Domain, DomainState, Event, EventKind};

use crate::backend::Hypervisor;

/// How often the poller lists the domains.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Events buffered per subscriber before it lags.
const CAPACITY: usize = 256;

/// The event source shared by every `GET /v1/events`.
#[derive(Clone)]
pub struct Hub {
    /// Shared with the poller task.
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.inner.tx.receiver_count())
            .finish()
    }
}

/// What the hub and its poller share.
struct Inner {
    /// Where the states come from.
    backend: Arc<dyn Hypervisor>,
    /// Events to every subscriber.
    tx: broadcast::Sender<Arc<Event>>,
    /// Whether a poller task runs; changed under this lock together with subscribing, so a
    /// new subscriber never misses a poller that is just stopping.
    running: std::sync::Mutex<bool>,
    /// Wakes the poller before its interval ends (after a lifecycle call).
    poke: Notify,
    /// The gateway begins to stop: the poller ends, streams end.
    stop: CancellationToken,
    /// Time between two rounds.
    interval: Duration,
}

impl Hub {
    /// A hub over `backend`; everything stops when `stop` fires.
    pub fn new(backend: Arc<dyn Hypervisor>, stop: CancellationToken) -> Hub {
        Hub::with_interval(backend, stop, POLL_INTERVAL)
    }

    /// [`Hub::new`] with another polling interval (tests).
    pub fn with_interval(
        backend: Arc<dyn Hypervisor>,
        stop: CancellationToken,
        interval: Duration,
    ) -> Hub {
        let (tx, _) = broadcast::channel(CAPACITY);
        Hub {
            inner: Arc::new(Inner {
                backend,
                tx,
                running: std::sync::Mutex::new(false),
                poke: Notify::new(),
                stop,
                interval,
            }),
        }
    }

    /// Receive every event from now on; starts the poller if none runs.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        let mut running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let rx = self.inner.tx.subscribe();
        if !*running && !self.inner.stop.is_cancelled() {
            *running = true;
            tokio::spawn(poll(self.inner.clone()));
        }
        rx
    }

    /// Poll now (a lifecycle call just changed something).
    pub fn poke(&self) {
        self.inner.poke.notify_one();
    }

    /// Fires when the gateway begins to stop: event streams end then.
    pub fn stopping(&self) -> CancellationToken {
        self.inner.stop.clone()
    }
}

/// The poller: list, diff, broadcast; until no subscriber is left or the gateway stops.
async fn poll(inner: Arc<Inner>) {
    tracing::debug!("event poller started");
    let mut last: HashMap<String, DomainState> = HashMap::new();
    let mut first = true;
    loop {
        match inner.backend.list().await {
            Ok(domains) => {
                for e in diff(&mut last, &domains, first) {
                    // An error only means nobody listens right now.
                    let _ = inner.tx.send(Arc::new(e));
                }
                first = false;
            }
            Err(e) => tracing::debug!(error = %e, "event poller: cannot list domains"),
        }
        tokio::select! {
            _ = tokio::time::sleep(inner.interval) => {}
            _ = inner.poke.notified() => {}
            _ = inner.stop.cancelled() => break,
        }
        let mut running = inner
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.tx.receiver_count() == 0 {
            *running = false;
            tracing::debug!("event poller stopped: no subscribers");
            return;
        }
    }
    if let Ok(mut running) = inner.running.lock() {
        *running = false;
    }
    tracing::debug!("event poller stopped: gateway stops");
}

/// Compare `domains` with the states in `last` (updated in place) and return the events;
/// `baseline` records without reporting. Domains that disappeared are forgotten.
pub fn diff(
    last: &mut HashMap<String, DomainState>,
    domains: &[Domain],
    baseline: bool,
) -> Vec<Event> {
    let mut events = Vec::new();
    let time = crate::audit::now_rfc3339();
    for d in domains {
        let old = last.insert(d.name.clone(), d.state);
        if baseline {
            continue;
        }
        if let Some(kind) = transition(old, d.state) {
            events.push(Event {
                time: time.clone(),
                domain: d.name.clone(),
                event: kind,
                state: d.state,
                initial: false,
            });
        }
    }
    last.retain(|name, _| domains.iter().any(|d| &d.name == name));
    events
}

/// The event for a change of state from `old` (`None`: a domain not seen before) to `new`;
/// `None` when nothing worth reporting changed (same state, or shutting down / other).
pub fn transition(old: Option<DomainState>, new: DomainState) -> Option<EventKind> {
    use DomainState as S;
    if old == Some(new) {
        return None;
    }
    Some(match (old, new) {
        (Some(S::Paused), S::Running) => EventKind::Resumed,
        (Some(S::ShuttingDown), S::Running) => return None,
        (_, S::Running) => EventKind::Started,
        (_, S::ShutOff) => EventKind::Stopped,
        (_, S::Crashed) => EventKind::Crashed,
        (_, S::Paused) => EventKind::Paused,
        (_, S::Unavailable) => EventKind::Unavailable,
        (None, s) => snapshot_kind(s),
        _ => return None,
    })
}

/// The `event` of an `initial: true` line: how the domain's current state reads as an event.
pub fn snapshot_kind(state: DomainState) -> EventKind {
    match state {
        DomainState::ShutOff => EventKind::Stopped,
        DomainState::Crashed => EventKind::Crashed,
        DomainState::Paused => EventKind::Paused,
        DomainState::Unavailable => EventKind::Unavailable,
        // running, shutting down (still running), and states without a better name
        _ => EventKind::Started,
    }
}

/// The `initial: true` line for domain `d`.
pub fn initial(d: &Domain) -> Event {
    Event {
        time: crate::audit::now_rfc3339(),
        domain: d.name.clone(),
        event: snapshot_kind(d.state),
        state: d.state,
        initial: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DomainState as S;

    fn dom(name: &str, state: DomainState) -> Domain {
        Domain {
            name: name.into(),
            uuid: None,
            state,
            state_reason: None,
            vcpus: None,
            memory_mib: None,
            consoles: vec![],
            role: None,
        }
    }

    #[test]
    fn transitions_map_to_events() {
        use EventKind as E;
        let cases = [
            (Some(S::ShutOff), S::Running, Some(E::Started)),
            (Some(S::Unavailable), S::Running, Some(E::Started)),
            (Some(S::Crashed), S::Running, Some(E::Started)),
            (Some(S::Running), S::ShutOff, Some(E::Stopped)),
            (Some(S::ShuttingDown), S::ShutOff, Some(E::Stopped)),
            (Some(S::Running), S::Crashed, Some(E::Crashed)),
            (Some(S::Running), S::Paused, Some(E::Paused)),
            (Some(S::Paused), S::Running, Some(E::Resumed)),
            (Some(S::Running), S::Unavailable, Some(E::Unavailable)),
            (Some(S::Running), S::Running, None),
            (Some(S::Running), S::ShuttingDown, None),
            (Some(S::ShuttingDown), S::Running, None),
            (None, S::Running, Some(E::Started)),
            (None, S::ShutOff, Some(E::Stopped)),
        ];
        for (old, new, want) in cases {
            assert_eq!(transition(old, new), want, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn diff_reports_changes_after_the_baseline() {
        let mut last = HashMap::new();
        assert!(diff(
            &mut last,
            &[dom("a", S::Running), dom("b", S::ShutOff)],
            true
        )
        .is_empty());
        let e = diff(
            &mut last,
            &[dom("a", S::ShutOff), dom("b", S::ShutOff)],
            false,
        );
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].domain.as_str(), e[0].event),
            ("a", EventKind::Stopped)
        );
        assert_eq!(e[0].state, S::ShutOff);
        assert!(!e[0].initial);
        // b disappears, then comes back running
        assert!(diff(&mut last, &[dom("a", S::ShutOff)], false).is_empty());
        assert!(!last.contains_key("b"));
        let e = diff(
            &mut last,
            &[dom("a", S::Running), dom("b", S::Running)],
            false,
        );
        let got: Vec<_> = e.iter().map(|e| (e.domain.as_str(), e.event)).collect();
        assert_eq!(got, [("a", EventKind::Started), ("b", EventKind::Started)]);
    }

    /// A backend whose one domain has whatever state the test sets; counts listings.
    struct Fake {
        /// The domain's state.
        state: std::sync::Mutex<DomainState>,
        /// How many times `list` ran.
        lists: std::sync::atomic::AtomicUsize,
    }

    impl Hypervisor for Fake {
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn list(
            &self,
        ) -> futures_util::future::BoxFuture<'_, Result<Vec<Domain>, crate::backend::BackendError>>
        {
            self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let s = *self.state.lock().unwrap();
            Box::pin(async move { Ok(vec![dom("a", s)]) })
        }
        fn domain<'a>(
            &'a self,
            name: &'a str,
        ) -> futures_util::future::BoxFuture<'a, Result<Domain, crate::backend::BackendError>>
        {
            let s = *self.state.lock().unwrap();
            Box::pin(async move { Ok(dom(name, s)) })
        }
        fn open_console<'a>(
            &'a self,
            _: &'a str,
            _: virtgate_proto::ConsoleKind,
        ) -> futures_util::future::BoxFuture<
            'a,
            Result<crate::backend::BoxedStream, crate::backend::BackendError>,
        > {
            Box::pin(async {
                Err(crate::backend::BackendError::NoConsole {
                    domain: "a".into(),
                    kind: "vnc",
                })
            })
        }
        fn shutdown(&self) -> futures_util::future::BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    #[tokio::test]
    async fn poller_runs_only_while_someone_listens() {
        use std::sync::atomic::Ordering::SeqCst;
        let fake = Arc::new(Fake {
            state: std::sync::Mutex::new(S::Running),
            lists: Default::default(),
        });
        let stop = CancellationToken::new();
        let hub = Hub::with_interval(fake.clone(), stop.clone(), Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(fake.lists.load(SeqCst), 0, "no subscriber, no polling");
        let mut rx = hub.subscribe();
        tokio::time::sleep(Duration::from_millis(60)).await;
        *fake.state.lock().unwrap() = S::ShutOff;
        hub.poke();
        let e = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((e.domain.as_str(), e.event), ("a", EventKind::Stopped));
        drop(rx);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = fake.lists.load(SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            fake.lists.load(SeqCst),
            n,
            "the poller stopped with its last subscriber"
        );
        // A new subscriber starts it again; stopping the gateway ends it.
        let _rx = hub.subscribe();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(fake.lists.load(SeqCst) > n);
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let m = fake.lists.load(SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            fake.lists.load(SeqCst),
            m,
            "the poller stopped with the gateway"
        );
    }

    #[test]
    fn initial_lines_describe_the_state() {
        let e = initial(&dom("a", S::ShutOff));
        assert!(e.initial);
        assert_eq!(e.event, EventKind::Stopped);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["initial"], true);
        assert_eq!(json["state"], "shut_off");
        assert!(json["time"].as_str().unwrap().ends_with('Z'));
        let later = Event {
            initial: false,
            ..e
        };
        assert!(serde_json::to_value(&later)
            .unwrap()
            .get("initial")
            .is_none());
    }
}
