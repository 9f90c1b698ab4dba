//! A minimal QMP client: JSON lines over a tokio `UnixStream`.
//!
//! Why not the `qapi` crate: the gateway needs a handful of commands (`qmp_capabilities`,
//! `query-status`, `query-uuid`, `query-cpus-fast`, `query-memory-size-summary`, `quit`,
//! `system_powerdown`, `system_reset`, `screendump`) and reads a few fields of each. Fifty lines of serde_json over tokio do that with no
//! extra dependency tree, fully async, with our own timeouts and error messages, and they
//! keep working when QEMU adds fields. qapi (passively maintained) generates the whole
//! QAPI schema, which we would compile but not use.
//!
//! Protocol: QEMU sends a greeting `{"QMP": ...}`; we send `qmp_capabilities`; after that
//! every command gets one `{"return": ...}` or `{"error": {"class", "desc"}}` line.
//! Asynchronous `{"event": ...}` lines may come in between and are skipped.

use std::path::Path;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Longest QMP line we accept; answers to our queries are a few hundred bytes.
const MAX_LINE: usize = 1 << 20;

/// What went wrong talking QMP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QmpError {
    /// The socket could not be connected (QEMU not running, wrong path).
    #[error("{}", connect_message(path, source))]
    Connect {
        /// The QMP socket.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Reading or writing failed mid-conversation.
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
    /// QEMU closed the connection (it is quitting).
    #[error("QMP connection closed by QEMU")]
    Closed,
    /// A line that is not QMP.
    #[error("QMP protocol: {0}")]
    Protocol(String),
    /// QEMU refused the command.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QMP error class (`CommandNotFound`, `GenericError`, ...).
        class: String,
        /// QEMU's description.
        desc: String,
    },
}

fn connect_message(path: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("QMP socket {path} does not exist (QEMU not running?)")
        }
        std::io::ErrorKind::ConnectionRefused => {
            format!("QMP socket {path}: connection refused (QEMU not running)")
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("QMP socket {path}: permission denied (the gateway's user cannot use it)")
        }
        _ => format!("QMP socket {path}: {e}"),
    }
}

/// One QMP session in command mode.
#[derive(Debug)]
pub struct Qmp {
    /// Lines from QEMU.
    reader: BufReader<OwnedReadHalf>,
    /// Commands to QEMU.
    writer: OwnedWriteHalf,
}

impl Qmp {
    /// Connect, read the greeting, and enter command mode. The caller bounds the time.
    pub async fn connect(path: &Path) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
        };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "expected a QMP greeting, got {greeting}"
            )));
        }
        qmp.execute("qmp_capabilities").await?;
        Ok(qmp)
    }

    /// Run a command without arguments and return its `return` value.
    pub async fn execute(&mut self, command: &str) -> Result<Value, QmpError> {
        self.execute_with(command, None).await
    }

    /// Run a command with `arguments` (a JSON object) and return its `return` value.
    pub async fn execute_with(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let msg = match arguments {
            Some(args) => json!({ "execute": command, "arguments": args }),
            None => json!({ "execute": command }),
        };
        let mut line = serde_json::to_vec(&msg).map_err(|e| QmpError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).await?;
        loop {
            let msg = self.read_message().await?;
            if msg.get("event").is_some() {
                continue;
            }
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                let field = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            return Err(QmpError::Protocol(format!("unexpected message {msg}")));
        }
    }

    async fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_line(&mut line)
            .await?;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        if !line.ends_with('\n') && n >= MAX_LINE {
            return Err(QmpError::Protocol("line too long".into()));
        }
        serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("{e}: {}", line.trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    /// A fake QEMU that greets, accepts capabilities, and answers query-status after an event.
    #[tokio::test]
    async fn talks_qmp_and_skips_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .await
                .unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).contains("qmp_capabilities"));
            s.write_all(b"{\"return\": {}}\r\n").await.unwrap();
            let n = s.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).contains("query-status"));
            s.write_all(b"{\"event\": \"RESUME\", \"timestamp\": {}}\r\n{\"return\": {\"status\": \"running\", \"running\": true}}\r\n")
                .await
                .unwrap();
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"nope\"}}\r\n")
                .await
                .unwrap();
        });
        let mut q = Qmp::connect(&path).await.unwrap();
        let st = q.execute("query-status").await.unwrap();
        assert_eq!(st["status"], "running");
        let e = q.execute("query-nothing").await.unwrap_err();
        assert!(e.to_string().contains("CommandNotFound"), "{e}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn missing_socket_says_so() {
        let e = Qmp::connect(Path::new("/nonexistent/qmp.sock"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "QMP socket /nonexistent/qmp.sock does not exist (QEMU not running?)"
        );
    }
}
