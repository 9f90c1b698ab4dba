//! The fixtures themselves: the test guest on a raw QEMU (serial echo, ACPI power button,
//! the variant that ignores it, its magenta screen), [`guest_screen_fraction`] on every
//! PNG flavour, a private Xvfb (a client's window, screenshots, a timed-out wait) and a
//! private libvirtd running the guest (virsh list, dominfo, shutdown, destroy, the
//! read-only socket, a restart, clean-up on drop; SPICE on a socket and on TCP, VNC and
//! SPICE together, no graphics at all).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use virtgate_tests::fixture::guest::SCREEN_TEXT;
use virtgate_tests::fixture::guest::{BANNER, POWER_OFF};
use virtgate_tests::fixture::libvirtd::qemu_pids_of;
use virtgate_tests::fixture::spice::link_reply;
use virtgate_tests::fixture::vnc::{snapshot_until, SEABIOS};
use virtgate_tests::{
    guest_kernel, guest_screen_fraction, poll, run, system_bin, text, ChildGuard, DomainSpec,
    GuestOptions, Libvirtd, QemuBuilder, Xvfb, GUEST_SCREEN_RGB,
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
        self.cmd_args(name, json!({}))
    }

    /// Run a command with arguments; returns its `return`.
    fn cmd_args(&mut self, name: &str, args: Value) -> Value {
        // One write: QEMU acts on a command as soon as its JSON is complete (`quit` may
        // close the socket before a separate newline arrives).
        let line = format!("{}\n", json!({ "execute": name, "arguments": args }));
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
    // The 720x400 text mode SeaBIOS left (the guest paints it, keeping the mode).
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

#[test]
fn guest_paints_its_screen_magenta() {
    let dir = tempdir();
    let kernel = guest_kernel(dir.path(), GuestOptions::default());
    let q = QemuBuilder::new("g")
        .kernel(&kernel)
        .paused(true)
        .start(dir.path());
    let mut serial = Serial::unix(q.serial.as_ref().unwrap());
    let mut qmp = Qmp::connect(&q.qmp);
    // Before the guest runs: SeaBIOS has not even started, nothing is magenta.
    let shot = dir.path().join("screen.png");
    let screendump = |qmp: &mut Qmp| -> Vec<u8> {
        let _ = std::fs::remove_file(&shot);
        qmp.cmd_args(
            "screendump",
            json!({ "filename": shot.to_str().unwrap(), "format": "png" }),
        );
        std::fs::read(&shot).expect("read the screendump")
    };
    let before = guest_screen_fraction(&screendump(&mut qmp));
    assert!(before < 0.01, "magenta before the guest ran: {before}");
    qmp.cmd("cont");
    // The guest paints before it prints its banner.
    serial.expect(&format!("{BANNER}\r\n"));
    let png = poll("the guest's magenta screen", DEADLINE, || {
        let png = screendump(&mut qmp);
        (guest_screen_fraction(&png) > 0.5).then_some(png)
    });
    let size = imagesize::blob_size(&png).expect("screendump is a PNG");
    assert_eq!((size.width, size.height), (720, 400), "text mode, 80x25");
    let f = guest_screen_fraction(&png);
    eprintln!("guest screen fraction {f:.4}");
    // All magenta but the title's white strokes (the cursor is off).
    assert!(
        f > 0.98 && f < 1.0,
        "fraction {f}: no {SCREEN_TEXT:?} on it?"
    );
    // Still working as before: serial echo and the power button.
    serial.echo("hello\n");
    qmp.cmd("system_powerdown");
    serial.expect(POWER_OFF);
    serial.expect_eof();
}

/// A `width`×`height` PNG of `color`/`depth` whose pixels are all `pixel` (samples at
/// that depth, big-endian for 16 bits), with `palette` for indexed ones.
fn png_of(
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    palette: Option<&[u8]>,
    row: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(depth);
        if let Some(p) = palette {
            enc.set_palette(p.to_vec());
        }
        let mut w = enc.write_header().expect("PNG header");
        let data: Vec<u8> = (0..height).flat_map(|_| row.iter().copied()).collect();
        w.write_image_data(&data).expect("PNG data");
    }
    out
}

#[test]
fn guest_screen_fraction_reads_every_png_flavour() {
    use png::{BitDepth as D, ColorType as C};
    let [r, g, b] = GUEST_SCREEN_RGB;
    // 4 pixels a row: 3 magenta (QEMU's 168 and the exact 170), 1 white.
    let rgb8 = [168, 0, 168, r, g, b, 170, 2, 168, 255, 255, 255];
    assert_eq!(
        guest_screen_fraction(&png_of(4, 2, C::Rgb, D::Eight, None, &rgb8)),
        0.75
    );
    let rgba8 = [r, g, b, 255, r, g, b, 0, 0, 0, 0, 255, 0, 0, 0, 255];
    assert_eq!(
        guest_screen_fraction(&png_of(4, 2, C::Rgba, D::Eight, None, &rgba8)),
        0.5
    );
    let rgb16: Vec<u8> = [0xa8a8u16, 0, 0xa8a8, 0xffff, 0xffff, 0xffff]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    assert_eq!(
        guest_screen_fraction(&png_of(2, 3, C::Rgb, D::Sixteen, None, &rgb16)),
        0.5
    );
    // Indexed, 2 bits: entries 0 (black) and 1 (magenta); a row of 4 pixels 1,1,1,0.
    let palette = [0, 0, 0, r, g, b];
    assert_eq!(
        guest_screen_fraction(&png_of(
            4,
            1,
            C::Indexed,
            D::Two,
            Some(&palette),
            &[0b0101_0100]
        )),
        0.75
    );
    // 1-bit grey (what ImageMagick writes for a black-and-white X screen): never magenta.
    assert_eq!(
        guest_screen_fraction(&png_of(8, 2, C::Grayscale, D::One, None, &[0b1010_1010])),
        0.0
    );
}

#[test]
fn xvfb_runs_a_client_and_screenshots_it() {
    let dir = tempdir();
    let x = Xvfb::start(&dir.path().join("x"));
    assert!(x.display().starts_with(':'), "{}", x.display());
    let other = Xvfb::start(&dir.path().join("y"));
    assert_ne!(x.display(), other.display(), "two fixtures, two displays");
    drop(other);

    let title = "virtgate xvfb fixture";
    let child = x
        .command(system_bin("xmessage", "x11-apps"))
        .args(["-title", title, "hello from the xvfb fixture"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start xmessage");
    let _xmessage = ChildGuard::new(child, "xmessage");
    poll("xmessage's window", DEADLINE, || {
        x.window_names().iter().any(|n| n == title).then_some(())
    });

    let png = x.screenshot_png();
    let size = imagesize::blob_size(&png).expect("screenshot is a PNG");
    assert_eq!((size.width, size.height), (1280, 1024));
    assert_eq!(guest_screen_fraction(&png), 0.0, "no guest on this screen");
    // The window's white background is on the otherwise black screen.
    x.wait_for_screen("xmessage's window", DEADLINE, |png| {
        let mut d = png::Decoder::new(std::io::Cursor::new(png));
        d.set_transformations(png::Transformations::normalize_to_color8());
        let mut r = d.read_info().expect("PNG header");
        let mut buf = vec![0; r.output_buffer_size().expect("PNG size")];
        r.next_frame(&mut buf).expect("PNG data");
        buf.iter().any(|&v| v > 0)
    });

    // A wait that times out names what it waited for and keeps the last picture.
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        x.wait_for_screen("a magenta screen", Duration::from_millis(300), |png| {
            guest_screen_fraction(png) > 0.5
        })
    }))
    .expect_err("nothing magenta on this screen");
    let msg = err
        .downcast_ref::<String>()
        .expect("panic message is a String");
    assert!(msg.contains("a magenta screen"), "{msg}");
    assert!(msg.contains(title), "visible windows named: {msg}");
    let kept = msg
        .split("last screenshot: ")
        .nth(1)
        .expect("path of the kept screenshot")
        .trim();
    let kept = std::fs::read(kept).expect("kept screenshot");
    assert!(kept.starts_with(b"\x89PNG"), "kept screenshot is a PNG");
}

/// Send the SPICE link message and read the first 4 bytes of the answer.
fn spice_answer(s: impl Read + Write) -> [u8; 4] {
    let reply = link_reply(s, "the SPICE server");
    [reply[0], reply[1], reply[2], reply[3]]
}

#[test]
fn libvirtd_spice_on_a_socket_and_tcp_both_consoles_and_none() {
    let dir = tempdir();
    let lv = Libvirtd::start(&dir.path().join("lv"));

    let spice = lv.define_and_start(&DomainSpec::new("vgt-sp").spice_socket());
    assert!(spice.vnc_socket.is_none());
    let sock = spice.spice_socket.as_ref().expect("spice socket path");
    let display = lv.virsh_ok(&["domdisplay", &spice.name]);
    assert!(display.contains("spice+unix://"), "{display}");
    let s = UnixStream::connect(sock).expect("connect to spice.sock");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(&spice_answer(s), b"REDQ");

    let tcp = lv.define_and_start(&DomainSpec::new("vgt-st").spice_tcp());
    let port = lv.spice_port(&tcp.name);
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to SPICE's port");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(&spice_answer(s), b"REDQ");

    let both = lv.define_and_start(&DomainSpec::new("vgt-vs").vnc_and_spice());
    let mut vnc = UnixStream::connect(both.vnc_socket.as_ref().expect("vnc socket path"))
        .expect("connect to vnc.sock");
    vnc.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut banner = [0u8; 12];
    vnc.read_exact(&mut banner).expect("RFB banner");
    assert_eq!(&banner, b"RFB 003.008\n");
    let s = UnixStream::connect(both.spice_socket.as_ref().expect("spice socket path"))
        .expect("connect to spice.sock");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(&spice_answer(s), b"REDQ");

    let none = lv.define_and_start(&DomainSpec::new("vgt-ng").no_graphics());
    assert!(none.vnc_socket.is_none() && none.spice_socket.is_none());
    assert!(!none.xml.contains("<graphics"), "{}", none.xml);
    assert_eq!(lv.domstate(&none.name), "running");
    let mut serial = Serial::pty(&lv.serial_pty(&none.name));
    serial.echo("no graphics\n");
    // The VGA card is still there: a libvirt screenshot (a PNG with libvirt 9.0 and QEMU
    // 7.2) shows the guest's screen, painted before the serial echo above.
    let shot = dir.path().join("none.png");
    lv.virsh_ok(&["screenshot", &none.name, shot.to_str().unwrap()]);
    let png = std::fs::read(&shot).expect("screenshot file");
    assert!(
        png.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        shot.display()
    );
    let f = guest_screen_fraction(&png);
    assert!(f > 0.5, "guest screen fraction {f}");
}
