//! The browser console driven by a real browser: Debian's Chromium, headless, over
//! WebDriver ([`virtgate_tests::ChromiumBuilder`]), against a real gateway and a real QEMU
//! guest (magenta screen, serial echo). The browser trusts the test CA through its NSS
//! database and presents the user's certificate (imported from the PKCS#12 that
//! `virtgate-pki export-p12` writes) without a dialog.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use virtgate_tests::{Chromium, ChromiumBuilder, ClientCert, Gateway};

/// How long a page or a console may take to show what a test waits for.
const PAGE_DEADLINE: Duration = Duration::from_secs(30);

/// A browser in `dir` trusting the gateway's CA and presenting `cert` to it.
fn browser(dir: &Path, gw: &Gateway, ca: &Path, cert: &ClientCert) -> Chromium {
    ChromiumBuilder::new(dir)
        .trust(ca)
        .client_cert(cert, &gw.https(0))
        .start()
}

#[test]
fn the_browser_presents_the_client_certificate_without_a_dialog() {
    let w = crate::World::start(|b| b);
    let b = browser(
        &w.dir.path().join("chromium"),
        &w.gateway,
        &w.pki.ca_pem,
        &w.alice,
    );
    b.goto(&format!("{}/v1/whoami", w.gateway.https(0)));
    let text = b.wait_text("whoami's JSON", PAGE_DEADLINE, |t| t.contains("\"user\""));
    let who: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(who["user"], "alice", "{who}");
    assert_eq!(who["method"], "certificate", "{who}");
}
