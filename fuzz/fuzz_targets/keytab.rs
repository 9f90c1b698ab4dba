//! Kerberos keytab files (binary), as the gateway lists their principals.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = virtgate_gateway::authn::keytab::parse_principals(data);
});
