//! tls.crl: the gateway's CRL file, through `authn::tls::server_tls` (its nextUpdate is read
//! with x509-parser, then rustls/webpki parse it for the client verifier). A fixed valid
//! server certificate, key and CA are written once; each input becomes the CRL file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use virtgate_gateway::config::Tls;

fn setup() -> &'static (Tls, PathBuf) {
    static TLS: OnceLock<(Tls, PathBuf)> = OnceLock::new();
    TLS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("virtgate-fuzz-crl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = virtgate_pki::rcgen::generate_simple_self_signed(vec!["gw.example.org".into()])
            .unwrap();
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        let crl = dir.join("crl.pem");
        let tls = Tls {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: Some(dir.join("cert.pem")),
            crl: Some(crl.clone()),
        };
        (tls, crl)
    })
}

fuzz_target!(|data: &[u8]| {
    let (tls, crl) = setup();
    std::fs::write(crl, data).unwrap();
    let _ = virtgate_gateway::authn::tls::server_tls(tls, false);
});
