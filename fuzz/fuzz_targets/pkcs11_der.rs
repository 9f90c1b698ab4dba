//! What a PKCS#11 token hands the client, wrapped in DER by `pkcs11::der`: CKA_EC_POINT
//! (`ec_point`, DER OCTET STRING or a bare point), a raw `r‖s` ECDSA signature
//! (`ecdsa_signature`), a digest (`digest_info`) and an RSA modulus/exponent
//! (`rsa_public_key`). Input: byte 0 picks the coordinate length (32, 48, 66 or the byte
//! itself), byte 1 where the RSA modulus ends, the rest is the token's value. Invariants:
//! a point is `04‖X‖Y` of the coordinate length; a signature is a DER SEQUENCE that holds
//! all it claims.
#![no_main]
use libfuzzer_sys::fuzz_target;
use virtgate_client::pkcs11::der::{digest_info, ec_point, ecdsa_signature, rsa_public_key};

/// The length a DER header at the start of `der` announces, and the header's size.
fn der_length(der: &[u8]) -> (usize, usize) {
    let first = der[1];
    if first < 0x80 {
        return (usize::from(first), 2);
    }
    let n = usize::from(first & 0x7f);
    let len = der[2..2 + n]
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    (len, 2 + n)
}

fuzz_target!(|data: &[u8]| {
    let [pick, split, value @ ..] = data else {
        return;
    };
    let coordinate = match pick % 4 {
        0 => 32,
        1 => 48,
        2 => 66,
        _ => usize::from(*pick),
    };
    if let Some(point) = ec_point(value, coordinate) {
        assert_eq!(point.len(), 1 + 2 * coordinate);
        assert_eq!(point[0], 0x04);
    }
    match ecdsa_signature(value) {
        Some(sig) => {
            assert!(!value.is_empty() && value.len() % 2 == 0);
            assert_eq!(sig[0], 0x30);
            let (len, header) = der_length(&sig);
            assert_eq!(header + len, sig.len());
        }
        None => assert!(value.is_empty() || value.len() % 2 == 1),
    }
    if let Some(info) = digest_info(value) {
        assert!(info.ends_with(value));
    }
    let (modulus, exponent) = value.split_at(usize::from(*split).min(value.len()));
    let der = rsa_public_key(modulus, exponent);
    let (len, header) = der_length(&der);
    assert_eq!(header + len, der.len());
});
