//! Graphical consoles through `virtgate libvirt`, the way virt-manager and virt-viewer open
//! them: libvirt's own Python binding (`openGraphicsFD`, `openGraphics`) against a real
//! libvirtd with VNC and SPICE domains, the descriptors crossing the ONE gateway
//! connection as streams. Also the refusals (no graphics, read-only), a QEMU killed under
//! an open descriptor stream, and 100 descriptors in a row leaving nothing behind.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use virtgate_tests::fixture::h2::H2;
use virtgate_tests::{
    metric, poll, run, system_bin, text, ChildGuard, ClientCert, ClientUser, Domain, DomainSpec,
    Gateway, GatewayBuilder, Graphics, Libvirtd, LineReader, Pki,
};

mod shared;
mod viewers;

/// The libvirt driver script (python3-libvirt).
const DRIVE: &str = include_str!("drive.py");

/// A libvirtd with a VNC domain, a SPICE domain, a second VNC domain (TCP) and one without
/// graphics; a gateway; adam (admin on `*`) and vic (viewer on `*`).
pub struct GWorld {
    pub pki: Pki,
    pub lv: Libvirtd,
    /// VNC on a unix socket.
    pub vnc: Domain,
    /// SPICE on a unix socket.
    pub spice: Domain,
    /// VNC on TCP.
    pub vnc_tcp: Domain,
    /// No graphics at all.
    pub headless: Domain,
    pub gateway: Gateway,
    pub audit: PathBuf,
    pub adam_cert: ClientCert,
    pub adam: ClientUser,
    pub vic_cert: ClientCert,
    pub vic: ClientUser,
    /// Dropped last: the processes above stop before their files go.
    pub dir: tempfile::TempDir,
}

impl GWorld {
    pub fn start() -> GWorld {
        let dir = virtgate_tests::tempdir();
        let pki = Pki::new(dir.path(), "ca");
        let lv = Libvirtd::start(&dir.path().join("lv"));
        let vnc = lv.define_and_start(&DomainSpec::new("gv"));
        let spice = lv.define_and_start(&DomainSpec::new("gs").graphics(Graphics::SpiceSocket));
        let vnc_tcp = lv.define_and_start(&DomainSpec::new("gt").graphics(Graphics::VncTcp));
        let headless = lv.define_and_start(&DomainSpec::new("gn").graphics(Graphics::None));
        let audit = dir.path().join("audit.jsonl");
        let gateway = GatewayBuilder::new(&pki)
            .libvirt(&lv.uri, &lv.socket, &lv.socket_ro)
            .rule(&["adam"], &["*"], "admin")
            .rule(&["vic"], &["*"], "viewer")
            .audit(&audit)
            .start(&dir.path().join("gw"));
        let adam_cert = pki.client("adam", None);
        let adam = ClientUser::new(&dir.path().join("adam"), &gateway.url(0), &adam_cert);
        let vic_cert = pki.client("vic", None);
        let vic = ClientUser::new(&dir.path().join("vic"), &gateway.url(0), &vic_cert);
        GWorld {
            pki,
            lv,
            vnc,
            spice,
            vnc_tcp,
            headless,
            gateway,
            audit,
            adam_cert,
            adam,
            vic_cert,
            vic,
            dir,
        }
    }

    /// `virtgate libvirt` as `user` on a socket named `name`.
    pub fn libvirt(
        &self,
        user: &ClientUser,
        ro: bool,
        name: &str,
    ) -> (ChildGuard, String, LineReader) {
        user.libvirt(&self.dir.path().join(format!("{name}.sock")), ro)
    }

    /// The gateway's open tunnels, from its metrics.
    fn tunnels_open(&self) -> f64 {
        metric(
            &self.adam_cert,
            &self.pki.ca_pem,
            &self.gateway.https(0),
            "virtgate_tunnels_open",
        )
    }
}

/// The driver script written into `dir`.
fn drive_script(dir: &Path) -> PathBuf {
    let p = dir.join("drive.py");
    std::fs::write(&p, DRIVE).expect("write drive.py");
    p
}

/// The system's python3 (python3-libvirt is a Debian package, not in a virtualenv).
fn python() -> Command {
    Command::new(system_bin("python3", "python3-libvirt"))
}

/// Run one operation of the driver; its JSON result.
fn drive(dir: &Path, uri: &str, args: &[&str]) -> Value {
    let out = run(python().arg(drive_script(dir)).arg(uri).args(args));
    let (o, e) = text(&out);
    assert!(out.status.success(), "drive.py {args:?} failed:\n{o}\n{e}");
    let last = o.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|err| panic!("not JSON ({err}): {o}\n{e}"))
}

/// Open descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
}

/// Audit lines about descriptors.
fn descriptor_audit(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["action"] == "libvirt_fd")
        .collect()
}

#[test]
fn open_graphics_fd_and_open_graphics_work_for_vnc_and_spice() {
    let w = GWorld::start();
    let (_fwd, uri, _err) = w.libvirt(&w.adam, false, "rw");
    let dir = w.dir.path();
    let all = {
        let mut v = vec![
            w.vnc.name.clone(),
            w.spice.name.clone(),
            w.vnc_tcp.name.clone(),
            w.headless.name.clone(),
        ];
        v.sort();
        v
    };

    // virt-manager's path: one openGraphicsFD; the same connection goes on listing
    let r = drive(dir, &uri, &["fd", &w.vnc.name, "0", "vnc"]);
    assert!(
        r["banner"].as_str().unwrap().starts_with("RFB 003.00"),
        "{r}"
    );
    assert_eq!(r["domains"], serde_json::json!(all), "{r}");
    assert_eq!(r["alive"], true, "{r}");
    // VNC on TCP alike
    let r = drive(dir, &uri, &["fd", &w.vnc_tcp.name, "0", "vnc"]);
    assert!(
        r["banner"].as_str().unwrap().starts_with("RFB 003.00"),
        "{r}"
    );

    // SPICE: one descriptor per channel, each answers the link header
    for _ in 0..3 {
        let r = drive(dir, &uri, &["fd", &w.spice.name, "0", "spice"]);
        assert_eq!(r["banner"], "REDQ", "{r}");
        assert_eq!(r["domains"], serde_json::json!(all), "{r}");
    }

    // virt-viewer's fallback: the client passes its own socket
    let r = drive(dir, &uri, &["open", &w.vnc.name, "0", "vnc"]);
    assert!(
        r["banner"].as_str().unwrap().starts_with("RFB 003.00"),
        "{r}"
    );
    let r = drive(dir, &uri, &["open", &w.spice.name, "0", "spice"]);
    assert_eq!(r["banner"], "REDQ", "{r}");
    assert_eq!(r["alive"], true, "{r}");

    // audited, with the domain
    let lines = descriptor_audit(&w.audit);
    let outcomes = |d: &str, what: &str| {
        lines
            .iter()
            .filter(|l| l["domain"] == d && l["outcome"].as_str().unwrap_or("").contains(what))
            .count()
    };
    assert!(
        outcomes(&w.vnc.name, "from virDomainOpenGraphicsFD") >= 1,
        "{lines:#?}"
    );
    assert!(outcomes(&w.spice.name, "claimed") >= 3, "{lines:#?}");
    assert!(
        outcomes(&w.vnc.name, "passed to virDomainOpenGraphics") >= 1,
        "{lines:#?}"
    );
    assert!(lines.iter().all(|l| l["user"] == "adam"), "{lines:#?}");
}

#[test]
fn refusals_are_libvirt_errors_and_the_connection_survives() {
    let w = GWorld::start();
    let dir = w.dir.path();
    // a domain without graphics: libvirtd's own error, passed through
    let (_rw, uri, _rw_err) = w.libvirt(&w.adam, false, "rw");
    let r = drive(dir, &uri, &["refuse", &w.headless.name, "0"]);
    assert_eq!(r["refused"], true, "{r}");
    assert!(r["error"].as_str().unwrap().contains("graphics"), "{r}");
    assert_eq!(r["alive"], true, "{r}");
    assert!(r["domains"].to_string().contains(&w.vnc.name), "{r}");

    // another call that passes descriptors (virDomainCreateWithFiles): a clean libvirt
    // error from virtgate, the call never reaches libvirtd, the connection lives
    let r = drive(dir, &uri, &["files", &w.headless.name]);
    assert_eq!(r["refused"], true, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("only graphical consoles"),
        "{r}"
    );
    assert_eq!(r["alive"], true, "{r}");
    assert!(r["domains"].to_string().contains(&w.vnc.name), "{r}");
    assert_eq!(w.lv.domstate(&w.headless.name).trim(), "running");

    // a viewer (read-only tunnel) asking for a descriptor: refused, connection lives
    let (_ro, ro_uri, _ro_err) = w.libvirt(&w.vic, true, "ro");
    let r = drive(dir, &ro_uri, &["refuse", &w.vnc.name, "0"]);
    assert_eq!(r["refused"], true, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("read only"),
        "{r}"
    );
    assert_eq!(r["alive"], true, "{r}");
    assert!(r["domains"].to_string().contains(&w.vnc.name), "{r}");

    // the API under it: a console the domain does not offer is a 404 whose hint is about
    // the domain's definition; a descriptor stream needs the libvirt tunnel's role and a
    // descriptor waiting on the same connection
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let addr = w.gateway.addrs[0];
        let mut adam = H2::connect(addr, &w.adam_cert, &w.pki.ca_pem).await;
        let (status, body) = adam
            .refused_tunnel(&format!("/v1/domains/{}/vnc", w.headless.name))
            .await;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("<graphics"), "{body}");
        let (status, body) = adam.refused_tunnel("/v1/libvirt/fds/4242").await;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("descriptor 4242 is not waiting"), "{body}");
        let mut vic = H2::connect(addr, &w.vic_cert, &w.pki.ca_pem).await;
        let (status, body) = vic.refused_tunnel("/v1/libvirt/fds/1").await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = vic.refused_tunnel("/v1/libvirt/fds").await;
        assert_eq!(status, 403, "{body}");
    });
    let denied = std::fs::read_to_string(&w.audit)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"user\":\"vic\"") && l.contains("\"decision\":\"deny\""))
        .count();
    assert!(denied >= 2, "vic's refusals are audited");

    // a viewer cannot open a read-write libvirt tunnel at all
    let out = w
        .vic
        .run(&["libvirt", "--socket", dir.join("no.sock").to_str().unwrap()]);
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{o}{e}");
    assert!(e.contains("admin"), "{e}");
}

#[test]
fn qemu_killed_under_a_descriptor_stream_and_100_descriptors_leave_nothing_behind() {
    let w = GWorld::start();
    let dir = w.dir.path();
    let (fwd, uri, _fwd_err) = w.libvirt(&w.adam, false, "rw");

    // a descriptor stream open on `vnc` while its QEMU dies
    let mut hold = ChildGuard::new(
        python()
            .arg(drive_script(dir))
            .args([
                uri.as_str(),
                "hold",
                &w.vnc.name,
                "0",
                "vnc",
                &w.vnc_tcp.name,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start drive.py hold"),
        "drive.py hold",
    );
    let mut out = BufReader::new(hold.child_mut().stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    assert!(
        line.contains("\"ready\": true") && line.contains("RFB"),
        "{line:?}"
    );
    let pid = w.lv.qemu_pid(&w.vnc.name).expect("QEMU pid");
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    hold.child_mut()
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("tell drive.py to go on");
    line.clear();
    out.read_line(&mut line).expect("result line");
    let r: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(r["ended"], true, "the dead display's stream ends: {r}");
    assert!(
        r["other_banner"].as_str().unwrap_or("").starts_with("RFB"),
        "{r}"
    );
    assert_eq!(r["alive"], true, "{r}");
    assert!(r["domains"].to_string().contains(&w.spice.name), "{r}");
    drop(hold);

    // 100 descriptors in a row: nothing stays open on the gateway or the laptop
    let gw_pid = w.gateway.pid();
    let r = drive(dir, &uri, &["loop", &w.spice.name, "1", "spice"]);
    assert_eq!(r["ok"], 1, "{r}");
    let settled = |what: &str, f: &dyn Fn() -> usize, base: usize| {
        poll(what, Duration::from_secs(10), || {
            (f() <= base).then_some(())
        });
    };
    let (gw_base, fwd_base) = (fd_count(gw_pid), fd_count(fwd.id()));
    let tunnels_base = w.tunnels_open();
    let r = drive(dir, &uri, &["loop", &w.spice.name, "100", "spice"]);
    assert_eq!(r["ok"], 100, "{r}");
    assert_eq!(r["alive"], true, "{r}");
    settled(
        "gateway descriptors back to their count",
        &|| fd_count(gw_pid),
        gw_base,
    );
    settled(
        "forwarder descriptors back to their count",
        &|| fd_count(fwd.id()),
        fwd_base,
    );
    poll("no tunnel left open", Duration::from_secs(10), || {
        (w.tunnels_open() <= tunnels_base).then_some(())
    });
    let claimed = descriptor_audit(&w.audit)
        .iter()
        .filter(|l| l["outcome"].as_str().unwrap_or("").ends_with("claimed"))
        .count();
    assert!(claimed >= 101, "every descriptor was claimed: {claimed}");
}
