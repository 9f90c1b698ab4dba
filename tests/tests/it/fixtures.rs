//! The fixtures themselves: the test guest on a raw QEMU (serial echo, ACPI power button,
//! the variant that ignores it) and a private libvirtd running it (virsh list, dominfo,
//! shutdown, destroy, the read-only socket, a restart, clean-up on drop).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use virtgate_tests::fixture::guest::{BANNER, POWER_OFF};
use virtgate_tests::fixture::libvirtd::qemu_pids_of;
use virtgate_tests::fixture::vnc::{snapshot_until, SEABIOS};
use virtgate_tests::{
    guest_kernel, poll, run, system_bin, text, DomainSpec, GuestOptions, Libvirtd, QemuBuilder,
};

const DEADLINE: Duration = Duration::from_secs(30);

fn tempdir() -> tempfile::TempDir {
    virtgate_tests::tempdir()
}

/// A serial line: bytes read on a thread, so reads can have deadlines.
struct Serial {
    rx: mpsc::Receiver<Vec<u8>>,
    tx: Box<dyn Write + Send>,
    seen: Vec<u8>,
    eof: bool,
}

impl Serial {
    fn new<R: Read + Send + 'static>(mut r: R, w: impl Write + Send + 'static) -> Self {
        let (txc, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if txc.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Serial {
            rx,
            tx: Box::new(w),
            seen: Vec::new(),
            eof: false,
        }
    }

    fn unix(path: &Path) -> Self {
        let s = UnixStream::connect(path).expect("connect to the serial socket");
        Serial::new(s.try_clone().unwrap(), s)
    }

    /// A pty (`/dev/pts/N`), put in raw mode first: no echo, no line editing.
    fn pty(path: &Path) -> Self {
        let out = run(Command::new(system_bin("stty", "coreutils"))
            .arg("-F")
            .arg(path)
            .args(["raw", "-echo"]));
        assert!(out.status.success(), "stty raw: {:?}", text(&out));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open the serial pty");
        Serial::new(f.try_clone().unwrap(), f)
    }

    /// Wait until everything received so far contains `needle`; consumes through it.
    fn expect(&mut self, needle: &str) {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(i) = find(&self.seen, needle.as_bytes()) {
                self.seen.drain(..i + needle.len());
                return;
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(b) => self.seen.extend(b),
                Err(_) => panic!(
                    "serial: no {needle:?} within {DEADLINE:?}; got {:?}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
    }

    /// Send `s` and read it back.
    fn echo(&mut self, s: &str) {
        self.tx.write_all(s.as_bytes()).expect("write to serial");
        self.tx.flush().expect("flush serial");
        self.expect(s);
    }

    /// Wait for the other end to close.
    fn expect_eof(&mut self) {
        let end = Instant::now() + DEADLINE;
        while !self.eof {
            match self
                .rx
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(b) => self.seen.extend(b),
                Err(mpsc::RecvTimeoutError::Disconnected) => self.eof = true,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("serial still open"),
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A QMP session on a unix socket.
struct Qmp {
    r: std::io::BufReader<UnixStream>,
    w: UnixStream,
    /// QEMU's log (next to the QMP socket), for failure messages.
    log: std::path::PathBuf,
}

impl Qmp {
    fn connect(path: &Path) -> Self {
        let s = UnixStream::connect(path).expect("connect QMP");
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut q = Qmp {
            r: std::io::BufReader::new(s.try_clone().unwrap()),
            w: s,
            log: path.with_file_name("qemu.log"),
        };
        q.line(); // greeting
        q.cmd("qmp_capabilities");
        q
    }

    fn line(&mut self) -> Value {
        use std::io::BufRead as _;
        let mut l = String::new();
        if let Err(e) = self.r.read_line(&mut l) {
            panic!("read QMP: {e}; {}", self.log_text());
        }
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("QMP {l:?}: {e}"))
    }

    fn log_text(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("qemu.log: {log}")
    }

    /// `quit`: QEMU may close the socket before or after its answer.
    fn quit(mut self) {
        let _ = self.w.write_all(b"{\"execute\": \"quit\"}\n");
        let mut rest = String::new();
        let _ = self.r.read_to_string(&mut rest);
    }

    /// Run a command; returns its `return` (events before it are skipped).
    fn cmd(&mut self, name: &str) -> Value {
        // One write: QEMU acts on a command as soon as its JSON is complete (`quit` may
        // close the socket before a separate newline arrives).
        let line = format!("{}\n", json!({ "execute": name }));
        if let Err(e) = self.w.write_all(line.as_bytes()) {
            panic!("QMP {name}: {e}; {}", self.log_text());
        }
        loop {
            let v = self.line();
            if let Some(r) = v.get("return") {
                return r.clone();
            }
            assert!(v.get("error").is_none(), "{name}: {v}");
        }
    }
}

#[test]
fn guest_on_qemu_echoes_serial_and_powers_off_on_the_power_button() {
    let dir = tempdir();
    let kernel = guest_kernel(dir.path(), GuestOptions::default());
    let started = Instant::now();
    let q = QemuBuilder::new("g")
        .kernel(&kernel)
        .paused(true)
        .start(dir.path());
    // Connected before the CPU runs: QEMU drops serial output nobody is connected to.
    let mut serial = Serial::unix(q.serial.as_ref().unwrap());
    let mut qmp = Qmp::connect(&q.qmp);
    // Typed before the guest is up: echoed after the banner.
    serial.tx.write_all(b"early\n").unwrap();
    qmp.cmd("cont");
    serial.expect(&format!("{BANNER}\r\n"));
    eprintln!("guest ready after {:?}", started.elapsed());
    serial.expect("early\n");
    serial.echo("hello\n");
    let long: String = (0..2000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    serial.echo(&long);

    assert_eq!(qmp.cmd("query-status")["status"], "running");
    let pressed = Instant::now();
    qmp.cmd("system_powerdown");
    serial.expect(POWER_OFF);
    serial.expect_eof();
    poll("QEMU to exit", DEADLINE, || {
        UnixStream::connect(&q.qmp).is_err().then_some(())
    });
    eprintln!("powered off {:?} after the button", pressed.elapsed());
}

#[test]
fn guest_ignoring_the_power_button_keeps_running() {
    let dir = tempdir();
    let kernel = guest_kernel(dir.path(), GuestOptions::ignoring_power_button());
    let q = QemuBuilder::new("g")
        .kernel(&kernel)
        .paused(true)
        .start(dir.path());
    let mut serial = Serial::unix(q.serial.as_ref().unwrap());
    let mut qmp = Qmp::connect(&q.qmp);
    qmp.cmd("cont");
    serial.expect(&format!("{BANNER}\r\n"));
    qmp.cmd("system_powerdown");
    // Two round trips: the guest has been through its idle loop (where the other variant
    // checks the button and powers off at once) since the button was pressed.
    serial.echo("one\n");
    serial.echo("two\n");
    assert_eq!(qmp.cmd("query-status")["status"], "running");
    qmp.quit();
    serial.expect_eof();
}

#[test]
fn libvirtd_runs_the_guest_shutdown_and_restart() {
    let dir = tempdir();
    let mut lv = Libvirtd::start(&dir.path().join("lv"));
    let d = lv.define(&DomainSpec::new("vgt-fx"));
    assert_eq!(lv.domstate(&d.name), "shut off");
    lv.start_domain(&d.name);

    let list = lv.virsh_ok(&["list", "--all"]);
    assert!(
        list.lines()
            .any(|l| l.contains(&d.name) && l.contains("running")),
        "{list}"
    );
    let info = lv.virsh_ok(&["dominfo", &d.name]);
    assert!(info.contains(&d.uuid) && info.contains("running"), "{info}");

    // Serial console: the pty of the live XML.
    let mut serial = Serial::pty(&lv.serial_pty(&d.name));
    serial.echo("hello\n");

    // VNC on the unix socket of the domain's folder.
    let mut vnc = UnixStream::connect(d.vnc_socket.as_ref().unwrap()).expect("VNC socket");
    vnc.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut banner = [0u8; 12];
    vnc.read_exact(&mut banner).expect("RFB banner");
    assert_eq!(&banner, b"RFB 003.008\n");
    drop(vnc);

    // libvirtd restarted: the domain keeps running and is taken over.
    let pid = lv.qemu_pid(&d.name).expect("QEMU pid");
    lv.restart();
    assert_eq!(lv.domstate(&d.name), "running");
    assert_eq!(lv.qemu_pid(&d.name), Some(pid));
    serial.echo("still there\n");

    // Graceful shutdown: the ACPI power button.
    let t = Instant::now();
    lv.virsh_ok(&["shutdown", &d.name]);
    serial.expect(POWER_OFF);
    lv.wait_state(&d.name, "shut off", DEADLINE);
    eprintln!("shut off {:?} after virsh shutdown", t.elapsed());
    let reason = lv.virsh_ok(&["domstate", "--reason", &d.name]);
    assert!(reason.contains("shutdown"), "{reason}");
    assert!(qemu_pids_of(&d.name).is_empty());

    // Start it again and leave it running: drop must clean up.
    lv.start_domain(&d.name);
    let name = d.name.clone();
    let lv_dir = lv.dir.clone();
    drop(lv);
    assert!(
        qemu_pids_of(&name).is_empty(),
        "QEMU of {name} left running"
    );
    assert!(!lv_dir
        .join("ns/etc/qemu")
        .join(format!("{name}.xml"))
        .exists());
}

#[test]
fn libvirtd_force_off_a_guest_ignoring_acpi_tcp_vnc_and_read_only() {
    let dir = tempdir();
    let lv = Libvirtd::start(&dir.path().join("lv"));
    let d = lv.define_and_start(&DomainSpec::new("vgt-fx").ignoring_power_button().vnc_tcp());
    let port = lv.vnc_port(&d.name);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    let shot = dir.path().join("screen.jpg");
    // The screen SeaBIOS left in text mode: the guest does not touch the display.
    snapshot_until(&format!("127.0.0.1::{port}"), &shot, SEABIOS);

    let mut serial = Serial::pty(&lv.serial_pty(&d.name));
    lv.virsh_ok(&["shutdown", &d.name]);
    serial.echo("one\n");
    serial.echo("two\n");
    assert_eq!(lv.domstate(&d.name), "running");

    // The read-only socket reads but refuses to write.
    let ro = |args: &[&str]| {
        run(Command::new(system_bin("virsh", "libvirt-clients"))
            .args(["-c", &lv.uri_ro])
            .args(args))
    };
    let out = ro(&["list", "--all"]);
    assert!(
        out.status.success() && text(&out).0.contains(&d.name),
        "{:?}",
        text(&out)
    );
    let out = ro(&["destroy", &d.name]);
    assert!(
        !out.status.success(),
        "destroy on the ro socket: {:?}",
        text(&out)
    );
    assert!(
        text(&out).1.contains("read only") || text(&out).1.contains("read-only"),
        "{:?}",
        text(&out)
    );

    lv.virsh_ok(&["destroy", &d.name]);
    lv.wait_state(&d.name, "shut off", DEADLINE);
    let reason = lv.virsh_ok(&["domstate", "--reason", &d.name]);
    assert!(reason.contains("destroyed"), "{reason}");
}
