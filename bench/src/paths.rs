//! The paths under test, each set up with the real programs and reached by the bench at a
//! local TCP address: raw TCP (the bench server itself), `ssh -L` through a real sshd,
//! a stunnel4 client/server pair (TLS 1.3), and `virtgate vnc` forwarders to a real
//! `virtgated` over TLS and over SSH. Everything a path starts is stopped when its
//! [`Path`] is dropped.
//!
//! [`World`] holds what several paths share: the temp dir, the bench servers, the CA and
//! client certificates (one plain key, one encrypted like a user's), the SSH key and
//! known_hosts of the test account. A [`Build`] is one set of virtgate binaries: the
//! current one, and with `--before` an older one whose paths are named `… (before)`.
//!
//! Each path names its processes by end, for the CPU split of P1: the client end (the
//! tunnel client a user runs: `virtgate vnc`, `ssh`, the client stunnel) and the server end
//! (what runs on the hypervisor host: `virtgated`, sshd's process tree, the server stunnel).

use std::any::Any;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use virtgate_tests::fixture::sshd::{keygen, open_path_to, Sshd, SshdBuilder, SSH_USER};
use virtgate_tests::{
    system_bin, ChildGuard, ClientCert, ClientUser, Gateway, GatewayBuilder, Pki,
};

use crate::servers::Servers;

/// The passphrase of the encrypted client key (P3).
pub const PASSPHRASE: &str = "bench passphrase 7f3c";

/// `max_streams_per_connection` of the bench's gateways: room for P5's 10,000 tunnels.
pub const MAX_STREAMS: u64 = 20_000;

/// What the paths share.
pub struct World {
    pub dir: tempfile::TempDir,
    pub servers: Servers,
    pub pki: Pki,
    /// User `bench`, unencrypted key (forwarders, stunnel, the bench's own h2 client).
    pub plain: ClientCert,
    /// User `benchpw`, key encrypted by `virtgate-pki` (PBKDF2), as a real user has it.
    pub locked: ClientCert,
    /// An ed25519 key (no passphrase) authorized for the test account on every sshd.
    pub ssh_key: PathBuf,
}

/// One build of virtgate's binaries under test.
#[derive(Debug, Clone)]
pub struct Build {
    /// The folder holding its `virtgated` and `virtgate`.
    pub dir: PathBuf,
    /// Whether it is the `--before` build: its paths are named `… (before)`.
    pub before: bool,
}

/// What the names of the `--before` build's paths end with.
pub const BEFORE: &str = " (before)";

/// A path under test: connect to `addr`.
pub struct Path {
    pub name: &'static str,
    /// What to know about this path (cipher, connection sharing).
    pub note: String,
    pub addr: SocketAddr,
    /// The client end's processes (roots of their trees), for its share of the CPU time.
    pub client_pids: Vec<u32>,
    /// The server end's processes (roots of their trees): what costs the hypervisor host.
    pub server_pids: Vec<u32>,
    /// The processes (and fixtures) behind it, stopped on drop.
    _keep: Vec<Box<dyn Any>>,
}

impl World {
    pub fn new(servers: Servers, dir: tempfile::TempDir) -> Result<World> {
        open_path_to(dir.path());
        let pki = Pki::new(dir.path(), "ca");
        let plain = pki.client("bench", None);
        let locked = pki.client("benchpw", Some(PASSPHRASE));
        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys)?;
        let ssh_key = keys.join("id_ed25519");
        keygen(&ssh_key, "ed25519", "");
        Ok(World {
            dir,
            servers,
            pki,
            plain,
            locked,
            ssh_key,
        })
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// A real sshd that lets [`World::ssh_key`] in as the test account.
    pub fn sshd(&self) -> Sshd {
        let sshd = SshdBuilder::default().start(&self.path("sshd"));
        sshd.authorize(&self.ssh_key.with_extension("pub"));
        let kh = self.path("known_hosts");
        let _ = std::fs::write(&kh, sshd.known_hosts_line("127.0.0.1"));
        sshd
    }

    /// A gateway of `build` serving the bench domain on 127.0.0.1 (TLS) and a unix socket
    /// (SSH), every user admin, with room for the connection and stream counts of P4/P5.
    pub fn gateway(&self, name: &str, build: &Build) -> Gateway {
        let gwdir = self.path(name);
        let _ = std::fs::create_dir_all(&gwdir);
        open_path_to(&gwdir);
        GatewayBuilder::new(&self.pki)
            .bin_dir(&build.dir)
            .listen(&["127.0.0.1:0"])
            .unix(&gwdir.join("gw.sock"))
            .domain(self.servers.domain_toml("bench"))
            .rule(&["*"], &["*"], "admin")
            .limit("max_connections", 20000)
            .limit("max_streams_per_connection", MAX_STREAMS)
            // P4 opens its connections PARALLEL_HANDSHAKES at a time from one address, and
            // P5 opens its tunnels as one user
            .limit("max_pending_handshakes", 4096)
            .limit("max_pending_per_address", 4096)
            .limit("max_connections_per_user", 20000)
            .limit("max_tunnels_per_user", 20000)
            .env("RUST_LOG", "info")
            .start(&gwdir)
    }

    /// The known_hosts file written by [`World::sshd`].
    pub fn known_hosts(&self) -> PathBuf {
        self.path("known_hosts")
    }

    /// `ssh` arguments shared by the forwarder and the login timing.
    pub fn ssh_args(&self, port: u16) -> Vec<String> {
        let mut a: Vec<String> = ["-F", "/dev/null", "-o", "BatchMode=yes", "-o"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push("StrictHostKeyChecking=yes".into());
        a.push("-o".into());
        a.push(format!(
            "UserKnownHostsFile={}",
            self.known_hosts().display()
        ));
        for o in ["ControlMaster=no", "ControlPath=none", "IdentitiesOnly=yes"] {
            a.push("-o".into());
            a.push(o.into());
        }
        a.push("-i".into());
        a.push(self.ssh_key.display().to_string());
        a.push("-p".into());
        a.push(port.to_string());
        a
    }
}

/// A free loopback port (bound, then released).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child whose stderr goes to `log`.
fn spawn(cmd: &mut Command, log: &FsPath, what: &str) -> Result<ChildGuard> {
    let err = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    Ok(ChildGuard::new(child, what))
}

/// Wait until `addr` accepts connections while `child` runs.
fn wait_port(addr: SocketAddr, child: &mut ChildGuard, what: &str, log: &FsPath) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_status() {
            let l = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{what} exited ({s}) before listening on {addr}:\n{l}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("{what} did not listen on {addr} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Raw TCP straight to the bench server.
pub fn raw(w: &World) -> Path {
    Path {
        name: "raw TCP",
        note: "no tunnel: the floor; the two P2 streams are separate connections".into(),
        addr: w.servers.tcp,
        client_pids: Vec::new(),
        server_pids: Vec::new(),
        _keep: Vec::new(),
    }
}

/// `ssh -N -L` through `sshd` to the bench server's TCP port, with `cipher` or the default.
pub fn ssh_l(w: &World, sshd: &Sshd, cipher: Option<&'static str>) -> Result<Path> {
    let lport = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], lport).into();
    let mut cmd = Command::new(system_bin("ssh", "openssh-client"));
    cmd.args(w.ssh_args(sshd.port))
        .args(["-N", "-T", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!(
            "127.0.0.1:{lport}:127.0.0.1:{}",
            w.servers.tcp.port()
        ));
    if let Some(c) = cipher {
        cmd.args(["-c", c]);
    }
    cmd.arg(format!("{SSH_USER}@127.0.0.1"));
    let log = w.path(&format!("ssh-L-{lport}.log"));
    let mut child = spawn(&mut cmd, &log, "ssh -L")?;
    wait_port(addr, &mut child, "ssh -L", &log)?;
    let (client_pids, server_pids) = (vec![child.id()], vec![sshd_pid(w)?]);
    let (name, cipher_name) = match cipher {
        Some(c) => ("ssh -L aes128-gcm", c.to_owned()),
        None => ("ssh -L default", default_ssh_cipher()),
    };
    Ok(Path {
        name,
        note: format!("cipher {cipher_name}; both P2 streams are channels of one ssh connection"),
        addr,
        client_pids,
        server_pids,
        _keep: vec![Box::new(child)],
    })
}

/// The pid of the sshd started by [`World::sshd`] (from its PidFile).
fn sshd_pid(w: &World) -> Result<u32> {
    let f = w.path("sshd/sshd.pid");
    let s = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
    s.trim()
        .parse()
        .with_context(|| format!("{} holds {s:?}", f.display()))
}

/// The first cipher OpenSSH's client offers (what it negotiates with OpenSSH).
pub fn default_ssh_cipher() -> String {
    Command::new("ssh")
        .args(["-F", "/dev/null", "-G", "example.invalid"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("ciphers "))
                .and_then(|c| c.split(',').next())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}

/// A stunnel4 client (local port) → stunnel4 server (TLS 1.3, client certificate required)
/// → the bench server's TCP port.
pub fn stunnel(w: &World) -> Result<Path> {
    let (sport, lport) = (free_port()?, free_port()?);
    let dir = w.path("stunnel");
    std::fs::create_dir_all(&dir)?;
    let d = |p: &FsPath| p.display().to_string();
    let server_conf = format!(
        "foreground = yes\npid =\ndebug = info\noutput = {log}\n[bench]\naccept = 127.0.0.1:{sport}\n\
         connect = 127.0.0.1:{target}\ncert = {cert}\nkey = {key}\nCAfile = {ca}\nverifyChain = yes\n\
         sslVersionMin = TLSv1.3\n",
        log = d(&dir.join("server.log")),
        target = w.servers.tcp.port(),
        cert = d(&w.pki.server_cert),
        key = d(&w.pki.server_key),
        ca = d(&w.pki.ca_pem),
    );
    let client_conf = format!(
        "foreground = yes\npid =\ndebug = notice\noutput = {log}\n[bench]\nclient = yes\n\
         accept = 127.0.0.1:{lport}\nconnect = 127.0.0.1:{sport}\ncert = {cert}\nkey = {key}\n\
         CAfile = {ca}\nverifyChain = yes\ncheckHost = localhost\nsslVersionMin = TLSv1.3\n",
        log = d(&dir.join("client.log")),
        cert = d(&w.plain.cert),
        key = d(&w.plain.key),
        ca = d(&w.plain.ca),
    );
    let mut guards = Vec::new();
    for (name, conf, port) in [
        ("server", server_conf, sport),
        ("client", client_conf, lport),
    ] {
        let path = dir.join(format!("{name}.conf"));
        std::fs::write(&path, conf)?;
        let log = dir.join(format!("{name}.stderr"));
        let mut child = spawn(
            Command::new(system_bin("stunnel4", "stunnel4")).arg(&path),
            &log,
            "stunnel4",
        )?;
        wait_port(([127, 0, 0, 1], port).into(), &mut child, "stunnel4", &log)?;
        guards.push(child);
    }
    Ok(Path {
        name: "stunnel4",
        note: "TLS 1.3, client certificate; stunnel opens one TLS connection per TCP connection, so the P2 streams do NOT share one".into(),
        addr: ([127, 0, 0, 1], lport).into(),
        // started server first, then client
        server_pids: vec![guards[0].id()],
        client_pids: vec![guards[1].id()],
        _keep: guards.into_iter().map(|g| Box::new(g) as Box<dyn Any>).collect(),
    })
}

/// The cipher suite stunnel's server logged for its last connection, if any.
pub fn stunnel_cipher(w: &World) -> Option<String> {
    let log = std::fs::read_to_string(w.path("stunnel/server.log")).ok()?;
    log.lines()
        .rev()
        .find_map(|l| l.split("ciphersuite: ").nth(1))
        .map(|s| s.split_whitespace().next().unwrap_or(s).to_owned())
}

/// `virtgate vnc bench --no-viewer` of `build` over TLS to `gw` (of the same build).
pub fn virtgate_tls(w: &World, gw: &Gateway, build: &Build) -> Path {
    let dir = if build.before {
        "client-tls-before"
    } else {
        "client-tls"
    };
    let user = ClientUser::new(&w.path(dir), &gw.url(0), &w.plain).bin_dir(&build.dir);
    let fwd = user.vnc("bench", &[]);
    Path {
        name: if build.before { "virtgate TLS (before)" } else { "virtgate TLS" },
        note: "virtgate vnc → virtgated (TLS 1.3, HTTP/2) → unix socket; both P2 streams on one HTTP/2 connection".into(),
        addr: fwd.addr,
        client_pids: vec![fwd.child.id()],
        server_pids: vec![gw.pid()],
        _keep: vec![Box::new(fwd)],
    }
}

/// A client profile (running `build`'s `virtgate`) that reaches `gw` over SSH through
/// `sshd` as the test account.
pub fn ssh_client(
    w: &World,
    gw: &Gateway,
    sshd: &Sshd,
    name: &str,
    build: &Build,
) -> Result<ClientUser> {
    let url = format!(
        "virtgate+ssh://{SSH_USER}@127.0.0.1:{}{}",
        sshd.port,
        gw.dir.join("gw.sock").display()
    );
    let user = ClientUser::with_profile(&w.path(name), &format!("url = {url:?}\n"));
    let ssh = user.home.join(".ssh");
    std::fs::create_dir_all(&ssh)?;
    std::fs::copy(&w.ssh_key, ssh.join("id_ed25519"))?;
    std::fs::write(ssh.join("known_hosts"), sshd.known_hosts_line("127.0.0.1"))?;
    Ok(user
        .with_env("SSH_AUTH_SOCK", "/nonexistent/agent.sock")
        .bin_dir(&build.dir))
}

/// `virtgate vnc bench --no-viewer` of `build` over SSH (`virtgate+ssh://`) to `gw`'s
/// unix socket (`gw` of the same build).
pub fn virtgate_ssh(w: &World, gw: &Gateway, sshd: &Sshd, build: &Build) -> Result<Path> {
    let dir = if build.before {
        "client-ssh-before"
    } else {
        "client-ssh"
    };
    let user = ssh_client(w, gw, sshd, dir, build)?;
    let fwd = user.vnc("bench", &[]);
    Ok(Path {
        name: if build.before { "virtgate SSH (before)" } else { "virtgate SSH" },
        note: "virtgate vnc → sshd (direct-streamlocal, russh client) → virtgated unix socket; one HTTP/2 connection".into(),
        addr: fwd.addr,
        // the client's SSH transport is in-process (russh); sshd relays to the gateway
        client_pids: vec![fwd.child.id()],
        server_pids: vec![gw.pid(), sshd_pid(w)?],
        _keep: vec![Box::new(fwd)],
    })
}
