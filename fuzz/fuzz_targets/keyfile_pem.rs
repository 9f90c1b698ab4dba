//! PEM key files (PKCS#8, encrypted PKCS#8, PKCS#1, SEC1) and certificate files, through
//! virtgate-pki's path-taking readers: each input is written to a temporary file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use virtgate_pki::zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("virtgate-fuzz-key-{}.pem", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let _ = virtgate_pki::is_encrypted(&path);
    let _ = virtgate_pki::load_certs(&path);
    let mut pass = || Ok(Zeroizing::new("fuzz".to_string()));
    let _ = virtgate_pki::load_private_key(&path, &mut pass);
});
