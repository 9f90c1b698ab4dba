//! `virtgate events [--json]`: follow `GET /v1/events` (newline-delimited JSON) and print
//! each line as it arrives.
//!
//! stdout, one line per event: `TIME DOMAIN EVENT STATE`, separated by single spaces; the
//! lines that open the stream (each visible domain's current state, `initial` on the wire)
//! end with ` (current)`. With `--json` every line is the gateway's JSON line unchanged.
//! A line this client cannot decode (a newer gateway) is printed unchanged too.
//!
//! Ends with status 0 on Ctrl-C / SIGTERM / SIGHUP, or when the gateway ends the stream
//! (with a note on stderr); status 1 when the connection breaks.

use std::io::Write;

use bytes::{Buf, BytesMut};
use virtgate_proto::{ApiPath, Event, EVENTS_CONTENT_TYPE};

use super::relay::Stop;
use crate::error::Error;
use crate::session::Session;

/// Longest line kept; a longer one is not an event and is dropped.
const MAX_LINE: usize = 1 << 20;

/// `virtgate events`
pub async fn run(session: &Session, as_json: bool) -> Result<(), Error> {
    let mut stop = Stop::install()?;
    let (content_type, mut body) = tokio::select! {
        r = session.get_stream(&ApiPath::Events) => r?,
        () = stop.wait() => return Ok(()),
    };
    if let Some(ct) = content_type.filter(|ct| !ct.starts_with(EVENTS_CONTENT_TYPE)) {
        tracing::warn!(content_type = %ct, "the event stream is not {EVENTS_CONTENT_TYPE}");
    }
    let mut lines = Lines::default();
    let reader_gone = stdout_closed();
    tokio::pin!(reader_gone);
    loop {
        let chunk = tokio::select! {
            () = stop.wait() => return Ok(()),
            // `virtgate events | head -3`: end now, not at the next event
            () = &mut reader_gone => return Ok(()),
            chunk = body.next() => chunk?,
        };
        let Some(chunk) = chunk else {
            if let Some(rest) = lines.finish() {
                emit(&rest, as_json)?;
            }
            eprintln!("note: the gateway ended the event stream");
            return Ok(());
        };
        for line in lines.push(&chunk) {
            if !emit(&line, as_json)? {
                // the reader went away (`virtgate events | head -3`): it has what it wanted
                return Ok(());
            }
        }
    }
}

/// Resolves when stdout is a pipe whose reader has gone (epoll reports an error on the
/// write end); never when stdout cannot be watched (a regular file).
async fn stdout_closed() {
    use std::os::fd::AsFd;
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;
    // `with_interest` is deprecated because a borrowed descriptor could be closed under
    // the reactor; here the AsyncFd owns its own duplicate (an OwnedFd), which is exactly
    // the invariant its unsafe successor asks for. No O_NONBLOCK is set on the shared
    // file description, so ordinary writes to stdout stay blocking.
    #[allow(deprecated)]
    let watched = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| AsyncFd::with_interest(fd, Interest::WRITABLE));
    match watched {
        Ok(fd) => match fd.ready(Interest::ERROR).await {
            Ok(mut guard) => guard.retain_ready(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch stdout");
                std::future::pending::<()>().await
            }
        },
        Err(_) => std::future::pending::<()>().await,
    }
}

/// Print one line of the stream; `false` when stdout is a closed pipe.
fn emit(line: &str, as_json: bool) -> Result<bool, Error> {
    let Some(text) = render_line(line, as_json) else {
        return Ok(true);
    };
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Error::Output(e)),
    }
}

/// What `virtgate events` prints for one line of the stream (a line as [`Lines`] gives it
/// out, bytes from the gateway): `None` for a blank line; with `as_json` the line
/// unchanged, else the decoded [`Event`] described ([`describe`]) or, when it does not
/// decode, the line unchanged. The in-memory decoder behind the command, also the entry
/// point of `fuzz/fuzz_targets/events_ndjson.rs`.
pub fn render_line(line: &str, as_json: bool) -> Option<String> {
    if line.trim().is_empty() {
        return None;
    }
    if as_json {
        return Some(line.to_owned());
    }
    Some(match serde_json::from_str::<Event>(line) {
        Ok(e) => describe(&e),
        Err(err) => {
            tracing::debug!(error = %err, "an event line this client does not know");
            line.to_owned()
        }
    })
}

/// The people-facing line of an event.
pub fn describe(e: &Event) -> String {
    let event = serde_json::to_value(e.event)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let mut line = format!("{} {} {event} {}", e.time, e.domain, e.state);
    if e.initial {
        line.push_str(" (current)");
    }
    line
}

/// Splits a byte stream into lines (without `\n` or `\r\n`), across chunk boundaries.
#[derive(Default)]
pub struct Lines {
    /// Bytes after the last newline seen.
    partial: BytesMut,
    /// The current line grew past [`MAX_LINE`]: drop it up to the next newline.
    skipping: bool,
}

impl Lines {
    /// Add a chunk; returns the lines it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if self.skipping {
                self.skipping = false;
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(&rest[..i]);
                out.push(self.take());
            }
            rest = &rest[i + 1..];
        }
        if !self.skipping {
            self.partial.extend_from_slice(rest);
            if self.partial.len() > MAX_LINE {
                tracing::warn!("dropping an event line longer than {MAX_LINE} bytes");
                self.partial.clear();
                self.skipping = true;
            }
        }
        out
    }

    /// What is left when the stream ends without a final newline.
    pub fn finish(&mut self) -> Option<String> {
        (!self.skipping && !self.partial.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let line = self.partial.split().freeze();
        let mut s = String::from_utf8_lossy(line.chunk()).into_owned();
        if s.ends_with('\r') {
            s.pop();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtgate_proto::{DomainState, EventKind};

    #[test]
    fn lines_cross_chunks() {
        let mut l = Lines::default();
        assert!(l.push(b"{\"a\":").is_empty());
        assert_eq!(l.push(b"1}\r\n{\"b\""), vec!["{\"a\":1}"]);
        assert_eq!(l.push(b":2}\n\n"), vec!["{\"b\":2}", ""]);
        assert_eq!(l.finish(), None);
        l.push(b"tail");
        assert_eq!(l.finish().as_deref(), Some("tail"));
    }

    #[test]
    fn overlong_lines_are_dropped() {
        let mut l = Lines::default();
        let big = vec![b'x'; MAX_LINE + 1];
        assert!(l.push(&big).is_empty());
        assert!(l.push(b"more").is_empty());
        assert_eq!(l.push(b"\nok\n"), vec!["ok"]);
    }

    #[test]
    fn events_for_people() {
        let mut e = Event {
            time: "2026-11-27T10:00:00Z".into(),
            domain: "web1".into(),
            event: EventKind::Started,
            state: DomainState::Running,
            initial: true,
        };
        assert_eq!(
            describe(&e),
            "2026-11-27T10:00:00Z web1 started running (current)"
        );
        e.initial = false;
        e.event = EventKind::Stopped;
        e.state = DomainState::ShutOff;
        assert_eq!(describe(&e), "2026-11-27T10:00:00Z web1 stopped shut_off");
        let line = r#"{"time":"t","domain":"d","event":"crashed","state":"crashed"}"#;
        let parsed: Event = serde_json::from_str(line).unwrap();
        assert_eq!(describe(&parsed), "t d crashed crashed");
    }
}
