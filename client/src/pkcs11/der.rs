//! The few DER structures a token's raw output must be wrapped in before TLS or X.509 can
//! use it: an ECDSA signature (the token gives `r‖s`, TLS and CSRs want
//! `SEQUENCE { INTEGER r, INTEGER s }`), an RSA public key (`RSAPublicKey`, for the
//! certificate/key pairing check and CSRs), the `DigestInfo` of PKCS#1 v1.5 signatures,
//! and the EC point and curve of a token's key (CKA_EC_POINT, CKA_EC_PARAMS).

/// DER of P-256's OID 1.2.840.10045.3.1.7 (CKA_EC_PARAMS of a P-256 key).
pub const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of P-384's OID 1.3.132.0.34.
pub const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// A DER length.
fn length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

/// `tag length content`.
fn tlv(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    length(content.len(), out);
    out.extend_from_slice(content);
}

/// An unsigned big-endian number as a DER INTEGER: leading zeros dropped, one 0x00 added
/// when the top bit is set (it would read as negative).
fn unsigned_integer(n: &[u8], out: &mut Vec<u8>) {
    let n = match n.iter().position(|b| *b != 0) {
        Some(i) => &n[i..],
        None => &[0u8][..],
    };
    let mut content = Vec::with_capacity(n.len() + 1);
    if n[0] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(n);
    tlv(0x02, &content, out);
}

/// `r‖s` (two halves of equal length, as CKM_ECDSA returns them) as the DER
/// `Ecdsa-Sig-Value`. `None` when the input is empty or of odd length.
pub fn ecdsa_signature(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut ints = Vec::with_capacity(raw.len() + 8);
    unsigned_integer(r, &mut ints);
    unsigned_integer(s, &mut ints);
    let mut out = Vec::with_capacity(ints.len() + 4);
    tlv(0x30, &ints, &mut out);
    Some(out)
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017).
pub fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut ints = Vec::with_capacity(modulus.len() + exponent.len() + 16);
    unsigned_integer(modulus, &mut ints);
    unsigned_integer(exponent, &mut ints);
    let mut out = Vec::with_capacity(ints.len() + 4);
    tlv(0x30, &ints, &mut out);
    out
}

/// The DER `DigestInfo` prefixes of RFC 8017 section 9.2, note 1, by digest length.
pub fn digest_info(digest: &[u8]) -> Option<Vec<u8>> {
    let prefix: &[u8] = match digest.len() {
        32 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        48 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        64 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
        _ => return None,
    };
    Some([prefix, digest].concat())
}

/// The uncompressed point (`04‖X‖Y`) from CKA_EC_POINT, which PKCS#11 says is a DER OCTET
/// STRING around it (some tokens give the bare point: accepted too). `coordinate` is the
/// curve's coordinate length (32 for P-256).
pub fn ec_point(value: &[u8], coordinate: usize) -> Option<Vec<u8>> {
    let bare = 1 + 2 * coordinate;
    if value.len() == bare && value[0] == 0x04 {
        return Some(value.to_vec());
    }
    let (&tag, rest) = value.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, content) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 2 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (len == bare && content.len() == bare && content[0] == 0x04).then(|| content.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_small_halves() {
        assert_eq!(
            ecdsa_signature(&[0x01, 0x02]).unwrap(),
            vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02]
        );
        // high bit set: a 0x00 is added; leading zeros dropped; zero stays one byte
        assert_eq!(
            ecdsa_signature(&[0x00, 0x80, 0x00, 0x00]).unwrap(),
            vec![0x30, 0x07, 0x02, 0x02, 0x00, 0x80, 0x02, 0x01, 0x00]
        );
        assert!(ecdsa_signature(&[]).is_none());
        assert!(ecdsa_signature(&[1, 2, 3]).is_none());
    }

    #[test]
    fn ecdsa_p384_needs_a_long_length() {
        // 48-byte halves with the top bit set: 2 × (2 + 49) = 102 bytes of content
        let raw = [0xffu8; 96];
        let der = ecdsa_signature(&raw).unwrap();
        assert_eq!(&der[..2], &[0x30, 0x66]);
        let raw = [0xffu8; 132]; // P-521-sized: content 2 × (2 + 67) = 138 > 127
        let der = ecdsa_signature(&raw).unwrap();
        assert_eq!(&der[..3], &[0x30, 0x81, 138]);
        assert_eq!(der.len(), 3 + 138);
    }

    #[test]
    fn ecdsa_der_verifies_with_ring() {
        use ring::rand::SystemRandom;
        use ring::signature::{self, EcdsaKeyPair, KeyPair};
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        for _ in 0..20 {
            let raw = key.sign(&rng, b"hello").unwrap();
            let der = ecdsa_signature(raw.as_ref()).unwrap();
            signature::UnparsedPublicKey::new(
                &signature::ECDSA_P256_SHA256_ASN1,
                key.public_key().as_ref(),
            )
            .verify(b"hello", &der)
            .unwrap();
        }
    }

    #[test]
    fn rsa_public_key_and_digest_info() {
        assert_eq!(
            rsa_public_key(&[0x00, 0xc3], &[0x01, 0x00, 0x01]),
            vec![0x30, 0x09, 0x02, 0x02, 0x00, 0xc3, 0x02, 0x03, 0x01, 0x00, 0x01]
        );
        let d = digest_info(&[0u8; 32]).unwrap();
        assert_eq!((d.len(), d[1]), (19 + 32, 0x31));
        assert!(digest_info(&[0u8; 20]).is_none());
    }

    #[test]
    fn ec_points_wrapped_or_bare() {
        let mut point = vec![0x04];
        point.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&point);
        assert_eq!(ec_point(&wrapped, 32).unwrap(), point);
        assert_eq!(ec_point(&point, 32).unwrap(), point);
        let mut p384 = vec![0x04];
        p384.extend([9u8; 96]);
        let mut long = vec![0x04, 0x81, 97];
        long.extend(&p384);
        assert_eq!(ec_point(&long, 48).unwrap(), p384);
        assert!(ec_point(&wrapped, 48).is_none());
        assert!(ec_point(&[0x04, 0x02, 0x04], 32).is_none());
        assert!(ec_point(&[], 32).is_none());
    }
}
