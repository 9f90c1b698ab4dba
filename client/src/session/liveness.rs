//! Is the gateway still there? HTTP/2 PING keepalive settings ([`Keepalive`]) and a watch on
//! the connection's byte stream ([`Watched`], [`Liveness`]) that tells, when the connection
//! ends, whether it ended because the gateway stopped answering.
//!
//! [`keep_alive`] sends a PING after `interval` without a byte from the gateway and gives up
//! when no answer came within `timeout`; the gateway does the same from its side. The watch
//! records when bytes last arrived, which also tells a connection that ended some other way
//! (the SSH transport's own keepalive closing the channel) from one the gateway closed. A live gateway is never silent for longer than
//! `interval` plus a round trip (it answers our PINGs and sends its own), so a connection
//! that ended after `interval + timeout` of silence ended because the keepalive ran out,
//! however the end showed up (hyper's timeout, or the SSH transport's own keepalive closing
//! the channel).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::Error;
use crate::profile::Profile;

/// HTTP/2 keepalive: a PING after `interval` of silence, answered within `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence after which a PING is sent (profile key `keepalive_interval_s`).
    pub interval: Duration,
    /// How long the answer may take (profile key `keepalive_timeout_s`).
    pub timeout: Duration,
}

impl Default for Keepalive {
    /// 5 s + 5 s: a vanished gateway is noticed within 10 s, like the gateway notices a
    /// vanished client (its `[limits]` defaults).
    fn default() -> Self {
        Keepalive {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        }
    }
}

impl Keepalive {
    /// The longest silence a live gateway can keep: after this much, the keepalive has run out.
    pub fn bound(&self) -> Duration {
        self.interval + self.timeout
    }

    /// Whether a connection that ended after `silent` without a byte from the gateway ended
    /// because the keepalive ran out (a little slack for timer rounding).
    pub fn ran_out(&self, silent: Duration) -> bool {
        silent + Duration::from_millis(100) >= self.bound()
    }

    /// The profile's keepalive keys over the defaults; 0 is refused (it would turn keepalive off
    /// or give up at once).
    pub fn from_profile(profile: Option<&Profile>) -> Result<Keepalive, Error> {
        let mut k = Keepalive::default();
        let Some(p) = profile else { return Ok(k) };
        for (key, value, slot) in [
            (
                "keepalive_interval_s",
                p.keepalive_interval_s,
                &mut k.interval,
            ),
            ("keepalive_timeout_s", p.keepalive_timeout_s, &mut k.timeout),
        ] {
            match value {
                None => {}
                Some(0) => {
                    return Err(Error::Setting {
                        message: format!("`{key} = 0` in profile `{}`", p.name),
                        hint: format!(
                            "give it at least 1 second, or remove it for the default ({} s)",
                            slot.as_secs()
                        ),
                    })
                }
                Some(s) => *slot = std::time::Duration::from_secs(s),
            }
        }
        Ok(k)
    }

    /// russh's keepalive for the SSH transport: probes every `interval`, and gives up after
    /// enough unanswered ones to cover `timeout` (it ends the session after `max + 1`
    /// intervals of silence, so no earlier than HTTP/2's own keepalive).
    pub fn ssh(&self) -> (Duration, usize) {
        let interval = self.interval.max(Duration::from_secs(1));
        let max = self
            .timeout
            .as_millis()
            .div_ceil(interval.as_millis())
            .max(1);
        (interval, usize::try_from(max).unwrap_or(usize::MAX))
    }
}

/// Run the keepalive: PING after `k.interval` of silence; returns how long the gateway has
/// been silent once a PING went unanswered for `k.timeout` (never, if h2 gave no PING
/// handle). The connection must be driven meanwhile (its task polls both).
pub async fn keep_alive(
    pings: Option<h2::PingPong>,
    k: Keepalive,
    live: Arc<Liveness>,
) -> Duration {
    let Some(mut pings) = pings else {
        return std::future::pending().await;
    };
    loop {
        let silent = live.silent_for();
        if silent < k.interval {
            tokio::time::sleep(k.interval - silent).await;
            continue;
        }
        match tokio::time::timeout(k.timeout, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            // the connection broke: its own end says why
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return live.silent_for(),
        }
    }
}

/// What the watch has seen of one connection's byte stream.
#[derive(Debug)]
pub struct Liveness {
    /// When the watch started; the zero of `last_read_ms`.
    born: Instant,
    /// Milliseconds after `born` at which bytes last arrived.
    last_read_ms: AtomicU64,
}

impl Liveness {
    /// How long nothing has arrived.
    pub fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_read_ms.load(Relaxed));
        self.born.elapsed().saturating_sub(last)
    }

    fn record_read(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read_ms.store(ms, Relaxed);
    }
}

/// A byte stream whose reads are recorded in a [`Liveness`].
pub struct Watched<S> {
    /// The transport's stream.
    inner: S,
    /// Shared with the session.
    liveness: Arc<Liveness>,
}

impl<S> Watched<S> {
    /// Watch `inner`; the [`Liveness`] is for the session to ask.
    pub fn new(inner: S) -> (Watched<S>, Arc<Liveness>) {
        let liveness = Arc::new(Liveness {
            born: Instant::now(),
            last_read_ms: AtomicU64::new(0),
        });
        (
            Watched {
                inner,
                liveness: liveness.clone(),
            },
            liveness,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.liveness.record_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn defaults_notice_a_dead_gateway_within_ten_seconds() {
        let k = Keepalive::default();
        assert_eq!(k.bound(), Duration::from_secs(10));
        assert!(k.ran_out(Duration::from_secs(10)));
        assert!(k.ran_out(Duration::from_millis(9_950)));
        // a live gateway is silent for at most an interval plus a round trip
        assert!(!k.ran_out(Duration::from_millis(5_300)));
        assert!(!k.ran_out(Duration::ZERO));
    }

    #[test]
    fn ssh_keepalive_covers_the_timeout() {
        let k = Keepalive::default();
        assert_eq!(k.ssh(), (Duration::from_secs(5), 1));
        let k = Keepalive {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
        };
        // gives up after (3 + 1) * 2 = 8 s >= 2 + 5
        assert_eq!(k.ssh(), (Duration::from_secs(2), 3));
    }

    #[test]
    fn profile_keys_override_the_defaults_and_zero_is_refused() {
        use crate::profile::Profiles;
        let parse = |keys: &str| {
            let text = format!("[profile.k]\nurl = \"virtgate://gw\"\n{keys}");
            let p = Profiles::parse(std::path::Path::new("/c/config.toml"), &text, None).unwrap();
            Keepalive::from_profile(p.profiles.get("k"))
        };
        assert_eq!(Keepalive::from_profile(None).unwrap(), Keepalive::default());
        let k = parse("keepalive_interval_s = 2\nkeepalive_timeout_s = 3\n").unwrap();
        assert_eq!(
            (k.interval, k.timeout),
            (Duration::from_secs(2), Duration::from_secs(3))
        );
        let e = parse("keepalive_interval_s = 0\n").unwrap_err();
        assert_eq!(e.to_string(), "`keepalive_interval_s = 0` in profile `k`");
        assert!(e.hint().unwrap().contains("at least 1 second"), "{e:?}");
    }

    #[tokio::test]
    async fn reads_are_recorded() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut w, live) = Watched::new(a);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(live.silent_for() >= Duration::from_millis(30));
        b.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        w.read_exact(&mut buf).await.unwrap();
        assert!(live.silent_for() < live.born.elapsed());
    }
}
