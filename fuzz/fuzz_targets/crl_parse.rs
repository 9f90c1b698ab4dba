//! tls.crl in memory: the gateway's CRL reader `authn::tls::parse_crls` (PEM), the
//! nextUpdate of what it found (`crls_next_update`, x509-parser), then, as `server_tls`
//! does, rustls/webpki's parse of the CRLs when the client verifier is built with them
//! (a fixed CA, made once). Faster than `crl_pem`, which goes through files and the
//! server's certificate and key on every input. Invariant: a successful parse has a CRL.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use virtgate_gateway::authn::tls::{crls_next_update, parse_crls};

/// The fixed trust anchors of the verifier.
fn roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let ca =
                virtgate_pki::rcgen::generate_simple_self_signed(vec!["ca.example.org".into()])
                    .unwrap();
            let mut roots = RootCertStore::empty();
            roots.add(ca.cert.der().clone()).unwrap();
            Arc::new(roots)
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("crl.pem");
    let Ok(crls) = parse_crls(path, data) else {
        return;
    };
    assert!(!crls.is_empty());
    let _ = crls_next_update(path, &crls);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let _ = WebPkiClientVerifier::builder_with_provider(roots(), provider)
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .build();
});
