//! P3: connect + authenticate + first call, as whole commands a user runs, timed from
//! process start to exit (median of N runs after one warm-up): `virtgate list` over TLS
//! with the user's encrypted key (the PBKDF2 unlock is part of the truth) and with a plain
//! key (to show what the unlock costs), over SSH, beside `ssh host true` (an SSH login and
//! a command: the floor of `ssh host virsh list`) and curl with the same certificate; and
//! `virtgate list` while `virtgate up` shares the connection (no unlock, no handshake).
//! `virsh -c qemu+tls://` would need a TLS libvirtd and is not measured.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use virtgate_tests::fixture::sshd::{Sshd, SSH_USER};
use virtgate_tests::{system_bin, ClientCert, ClientUser, Gateway};

use crate::load::median;
use crate::paths::{ssh_client, Build, World, PASSPHRASE};

/// The row of `virtgate list` with the encrypted key, connecting itself.
pub const LOCKED_ROW: &str = "virtgate list (TLS, encrypted key)";

/// The row of the same over `virtgate up`'s shared connection.
pub const UP_ROW: &str = "virtgate list (virtgate up running, encrypted key)";

/// One timed command.
#[derive(Debug, Clone)]
pub struct Login {
    pub name: &'static str,
    pub note: &'static str,
    /// Wall times in milliseconds.
    pub ms: Vec<f64>,
}

impl Login {
    pub fn median(&self) -> f64 {
        median(&self.ms)
    }
    pub fn min(&self) -> f64 {
        self.ms.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// Run `make()` once to warm up, then `runs` times; each must succeed and print `expect`.
fn time(runs: usize, expect: &str, mut make: impl FnMut() -> Command) -> Result<Vec<f64>> {
    let mut ms = Vec::with_capacity(runs);
    for i in 0..=runs {
        let mut cmd = make();
        cmd.stdin(Stdio::null());
        let t = Instant::now();
        let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
        let dt = t.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains(expect) {
            bail!(
                "{cmd:?} failed ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if i > 0 {
            ms.push(dt.as_secs_f64() * 1e3);
        }
    }
    Ok(ms)
}

/// A client profile for `cert` at `url`, no passphrase command (the environment gives it).
fn profile(w: &World, name: &str, url: &str, cert: &ClientCert) -> ClientUser {
    ClientUser::with_profile(
        &w.path(name),
        &format!(
            "url = {url:?}\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            cert.ca.display().to_string(),
            cert.cert.display().to_string(),
            cert.key.display().to_string()
        ),
    )
}

fn curl(gw: &Gateway, cert: &ClientCert) -> Command {
    let mut c = Command::new(system_bin("curl", "curl"));
    c.args(["-sS", "-f", "--http2", "--cacert"])
        .arg(&cert.ca)
        .arg("--cert")
        .arg(&cert.cert)
        .arg("--key")
        .arg(&cert.key);
    if let Some(p) = &cert.passphrase {
        c.arg("--pass").arg(p);
    }
    c.arg(format!("{}/v1/domains", gw.https(0)));
    c
}

/// All P3 commands against `gw` and `sshd`, with `build`'s `virtgate` over SSH (the others
/// run the current build's: [`virtgate_tests::bin`]).
pub fn measure(
    w: &World,
    gw: &Gateway,
    sshd: &Sshd,
    runs: usize,
    build: &Build,
) -> Result<Vec<Login>> {
    let mut out = Vec::new();
    let locked = profile(w, "p3-locked", &gw.url(0), &w.locked);
    out.push(Login {
        name: LOCKED_ROW,
        note: "key unlock (PBKDF2-SHA256, 600,000 rounds, as virtgate-pki writes it) + TLS 1.3 + GET /v1/domains",
        ms: time(runs, "bench", || {
            let mut c = locked.cmd();
            c.env("VIRTGATE_KEY_PASSPHRASE", PASSPHRASE).arg("list");
            c
        })?,
    });
    // the same user and key with `virtgate up` keeping the connection: unlocked once
    let up = {
        let out = locked
            .cmd()
            .env("VIRTGATE_KEY_PASSPHRASE", PASSPHRASE)
            .arg("up")
            .stdin(Stdio::null())
            .output()
            .context("starting virtgate up")?;
        if !out.status.success() {
            bail!(
                "virtgate up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        locked
            .running_up()
            .context("virtgate up returned but runs no process")?
    };
    out.push(Login {
        name: UP_ROW,
        note: "the same user and encrypted key while `virtgate up` keeps the connection: a local socket, the proxy, GET /v1/domains",
        ms: time(runs, "bench", || {
            let mut c = locked.cmd();
            c.arg("list");
            c
        })?,
    });
    drop(up);
    let plain = profile(w, "p3-plain", &gw.url(0), &w.plain);
    out.push(Login {
        name: "virtgate list (TLS, plain key)",
        note: "the same without the key unlock",
        ms: time(runs, "bench", || {
            let mut c = plain.cmd();
            c.arg("list");
            c
        })?,
    });
    let over_ssh = ssh_client(w, gw, sshd, "p3-ssh", build)?;
    out.push(Login {
        name: "virtgate list (SSH)",
        note: "russh login with an ed25519 key, direct-streamlocal, HTTP/2, GET /v1/domains",
        ms: time(runs, "bench", || {
            let mut c = over_ssh.cmd();
            c.arg("list");
            c
        })?,
    });
    out.push(Login {
        name: "ssh host true",
        note: "OpenSSH login (ed25519 key) + a command: the floor of `ssh host virsh list`",
        ms: time(runs, "", || {
            let mut c = Command::new(system_bin("ssh", "openssh-client"));
            c.args(w.ssh_args(sshd.port))
                .arg(format!("{SSH_USER}@127.0.0.1"))
                .arg("true");
            c
        })?,
    });
    out.push(Login {
        name: "curl (encrypted key)",
        note: "curl --http2 --cert --key --pass …/v1/domains (OpenSSL decrypts the same key)",
        ms: time(runs, "bench", || curl(gw, &w.locked))?,
    });
    out.push(Login {
        name: "curl (plain key)",
        note: "the same with the plain key",
        ms: time(runs, "bench", || curl(gw, &w.plain))?,
    });
    Ok(out)
}
