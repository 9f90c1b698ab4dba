//! `virtgate console DOM`: the domain's serial console over one tunnel stream
//! (extended CONNECT `/v1/domains/{name}/serial`), wired to stdin and stdout.
//!
//! - stdin is a terminal: it is put in raw mode (termios `cfmakeraw`, so Ctrl-C and friends
//!   go to the guest) once the tunnel is open, and restored on every way out: the end of
//!   [`run`] (a [`RawMode`] guard's `Drop`), Ctrl-] (0x1d), the gateway closing the console
//!   or going away, SIGTERM / SIGHUP / SIGINT from outside, an error, and a panic (a panic
//!   hook restores before the panic message is printed). stderr says
//!   `connected to DOM's serial console; Ctrl-] leaves`.
//! - stdin is not a terminal (a pipe, a file): no raw mode, no banner. At the end of the
//!   input the tunnel's write side is half-closed and the output keeps flowing until the
//!   gateway closes the console or a signal arrives (`timeout 5 virtgate console DOM` in
//!   scripts). A 0x1d byte in the input also leaves.
//!
//! stdout carries the guest's bytes unchanged. Status 0 on Ctrl-], a signal, or the gateway
//! closing the console (with a note on stderr); 1 when the connection breaks.

use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

use rustix::termios::{tcgetattr, tcsetattr, OptionalActions, Termios};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use virtgate_proto::{ApiPath, TunnelKind};

use super::relay::Stop;
use crate::error::{io_reason, Error};
use crate::session::Session;

/// How long a broken stream waits for the connection's verdict.
const VERDICT_WAIT: Duration = Duration::from_millis(500);

/// The byte that leaves the console: Ctrl-] (as in telnet and `virsh console`).
pub const ESCAPE: u8 = 0x1d;

/// How the input side ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputEnd {
    /// End of input; the tunnel's write side was half-closed.
    Eof,
    /// Ctrl-] was read; the bytes before it were sent.
    Escape,
}

/// `virtgate console DOM`
pub async fn run(session: &Session, name: &str) -> Result<(), Error> {
    let mut stop = Stop::install()?;
    let tunnel = ApiPath::Tunnel {
        domain: Some(name.to_owned()),
        kind: TunnelKind::Serial,
    };
    let stream = tokio::select! {
        s = session.open_tunnel(&tunnel) => s?,
        () = stop.wait() => return Ok(()),
    };
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let _raw = if interactive {
        let guard = RawMode::enter(stdin.as_fd()).map_err(Error::Terminal)?;
        eprint!("connected to {name}'s serial console; Ctrl-] leaves\r\n");
        Some(guard)
    } else {
        None
    };
    let (from_gateway, to_gateway) = tokio::io::split(stream);
    let mut input = tokio::spawn(pump_input(tokio::io::stdin(), to_gateway));
    let output = pump_output(from_gateway, tokio::io::stdout());
    tokio::pin!(output);
    let mut input_open = true;
    let result = loop {
        tokio::select! {
            done = &mut input, if input_open => match done {
                Ok(Ok(InputEnd::Escape)) => {
                    if interactive {
                        eprint!("\r\n");
                    }
                    break Ok(());
                }
                Ok(Ok(InputEnd::Eof)) => {
                    tracing::debug!("end of input; console write side half-closed");
                    input_open = false;
                }
                Ok(Err(e)) => break Err(lost(session, &e).await),
                Err(e) => break Err(lost(session, &std::io::Error::other(e)).await),
            },
            out = &mut output => match out {
                Ok(Closed::Gateway) => {
                    if interactive {
                        eprint!("\r\nnote: the gateway closed {name}'s serial console\r\n");
                    } else {
                        eprintln!("note: the gateway closed {name}'s serial console");
                    }
                    break Ok(());
                }
                Ok(Closed::Reader) => break Ok(()),
                Err(e) => break Err(lost(session, &e).await),
            },
            () = stop.wait() => break Ok(()),
            err = session.closed() => break Err(err),
        }
    };
    input.abort();
    result
}

/// A broken tunnel: the connection's own error when it ended (it may take a moment to
/// be recorded), else this stream's.
async fn lost(session: &Session, e: &std::io::Error) -> Error {
    if let Ok(err) = tokio::time::timeout(VERDICT_WAIT, session.closed()).await {
        return err;
    }
    Error::ConnectionLost {
        server: session.server().to_owned(),
        reason: format!("the serial console stream broke: {}", io_reason(e)),
    }
}

/// Copy input to the tunnel until end of input (then half-close) or Ctrl-].
pub async fn pump_input<R, W>(mut input: R, mut tunnel: W) -> std::io::Result<InputEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 4096];
    loop {
        let n = input.read(&mut buf).await?;
        if n == 0 {
            tunnel.shutdown().await?;
            return Ok(InputEnd::Eof);
        }
        let chunk = &buf[..n];
        let (send, end) = match find_escape(chunk) {
            Some(i) => (&chunk[..i], Some(InputEnd::Escape)),
            None => (chunk, None),
        };
        tunnel.write_all(send).await?;
        tunnel.flush().await?;
        if let Some(end) = end {
            return Ok(end);
        }
    }
}

/// Why the output side stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The gateway ended the stream.
    Gateway,
    /// Our stdout is a closed pipe.
    Reader,
}

/// Copy the tunnel to the output, flushing every chunk, until either side closes.
pub async fn pump_output<R, W>(mut tunnel: R, mut output: W) -> std::io::Result<Closed>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = tunnel.read(&mut buf).await?;
        if n == 0 {
            let _ = output.flush().await;
            return Ok(Closed::Gateway);
        }
        match output.write_all(&buf[..n]).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(Closed::Reader),
            Err(e) => return Err(e),
        }
        if let Err(e) = output.flush().await {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(Closed::Reader);
            }
            return Err(e);
        }
    }
}

/// Where the leave key is in a chunk of input.
pub fn find_escape(chunk: &[u8]) -> Option<usize> {
    chunk.iter().position(|&b| b == ESCAPE)
}

/// The terminal settings to put back, kept where the panic hook can reach them.
struct Saved {
    /// A duplicate of the terminal's file descriptor.
    fd: OwnedFd,
    /// The settings before raw mode.
    termios: Termios,
}

/// At most one terminal is in raw mode at a time: the one the console runs on.
static SAVED: Mutex<Option<Saved>> = Mutex::new(None);

/// Installs the panic hook once per process.
static HOOK: Once = Once::new();

fn saved() -> MutexGuard<'static, Option<Saved>> {
    SAVED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A terminal in raw mode; dropping it restores the settings it found.
#[derive(Debug)]
#[must_use = "the terminal is restored when this guard is dropped"]
pub struct RawMode {
    /// Not constructible outside [`RawMode::enter`].
    _private: (),
}

impl RawMode {
    /// Put the terminal behind `fd` in raw mode. Fails (`ENOTTY`) when it is no terminal.
    pub fn enter(fd: BorrowedFd<'_>) -> std::io::Result<RawMode> {
        let fd = fd.try_clone_to_owned()?;
        let original = tcgetattr(&fd)?;
        let mut raw = original.clone();
        raw.make_raw();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        // save first: a signal or panic right after the switch must find the old settings
        *saved() = Some(Saved {
            fd,
            termios: original,
        });
        let guard = RawMode { _private: () };
        if let Some(s) = saved().as_ref() {
            tcsetattr(&s.fd, OptionalActions::Now, &raw)?;
        }
        Ok(guard)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Put back the settings saved by [`RawMode::enter`], once; `true` when there were some.
pub fn restore() -> bool {
    match saved().take() {
        Some(s) => {
            if let Err(e) = tcsetattr(&s.fd, OptionalActions::Now, &s.termios) {
                eprintln!("warning: cannot restore the terminal ({e}); run `reset`");
            }
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::termios::LocalModes;

    #[test]
    fn escape_is_found_anywhere_in_a_chunk() {
        assert_eq!(find_escape(b"ls\n"), None);
        assert_eq!(find_escape(b"\x1d"), Some(0));
        assert_eq!(find_escape(b"abc\x1ddef\x1d"), Some(3));
    }

    #[tokio::test]
    async fn input_stops_at_escape_and_half_closes_at_eof() {
        let mut sent = Vec::new();
        let end = pump_input(&b"hello\n\x1dignored"[..], &mut sent)
            .await
            .unwrap();
        assert_eq!((end, sent.as_slice()), (InputEnd::Escape, &b"hello\n"[..]));

        let (mut gateway, ours) = tokio::io::duplex(64);
        let end = pump_input(&b"hello\n"[..], ours).await.unwrap();
        assert_eq!(end, InputEnd::Eof);
        let mut got = Vec::new();
        gateway.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello\n", "then EOF: the write side is shut down");
    }

    #[tokio::test]
    async fn output_runs_until_the_gateway_closes() {
        let mut out = Vec::new();
        let closed = pump_output(&b"guest says hi\r\n"[..], &mut out)
            .await
            .unwrap();
        assert_eq!(closed, Closed::Gateway);
        assert_eq!(out, b"guest says hi\r\n");
    }

    #[test]
    fn raw_mode_needs_a_terminal_and_is_undone() {
        let file = tempfile::tempfile().unwrap();
        assert!(RawMode::enter(file.as_fd()).is_err());
        assert!(!restore(), "nothing saved after a failed enter");

        // a real terminal: a pseudo-terminal pair
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap();
        let before = tcgetattr(&tty).unwrap();
        assert!(before.local_modes.contains(LocalModes::ICANON));
        let guard = RawMode::enter(tty.as_fd()).unwrap();
        let raw = tcgetattr(&tty).unwrap();
        assert!(!raw
            .local_modes
            .intersects(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG));
        drop(guard);
        let after = tcgetattr(&tty).unwrap();
        assert_eq!(after.local_modes, before.local_modes);
        assert_eq!(after.input_modes, before.input_modes);
        assert!(!restore(), "restored once only");

        // a panic restores too (through the hook), before unwinding drops the guard
        let guard = RawMode::enter(tty.as_fd()).unwrap();
        let fd = tty.try_clone().unwrap();
        let r = std::panic::catch_unwind(move || {
            let _g = guard;
            panic!("boom");
        });
        assert!(r.is_err());
        assert_eq!(tcgetattr(&fd).unwrap().local_modes, before.local_modes);
    }
}
