//! Certificate revocation lists.
//!
//! A CRL lists the serials of every revoked certificate, signed by the CA, with an
//! increasing CRL number and a `nextUpdate` ([`NEXT_UPDATE_DAYS`] ahead). The gateway
//! loads `crl.pem` into its client-certificate verifier; `openssl verify -crl_check`
//! reads the same file. Publish a fresh CRL before `nextUpdate` passes (`virtgate-pki
//! crl`), or verifiers that enforce it will start refusing every client.

use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, RevocationReason, RevokedCertParams,
    SerialNumber, SigningKey,
};
use time::{Duration, OffsetDateTime};

use crate::error::CaError;
use crate::index::IndexEntry;

/// How long a CRL stays current.
pub const NEXT_UPDATE_DAYS: i64 = 30;

/// The revocation reasons `revoke --reason` accepts (RFC 5280 names).
pub const REASONS: &[&str] = &[
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
];

/// Maps a reason name to the CRL reason code; `None` for an unknown name.
pub fn parse_reason(name: &str) -> Option<RevocationReason> {
    Some(match name {
        "unspecified" => RevocationReason::Unspecified,
        "keyCompromise" => RevocationReason::KeyCompromise,
        "affiliationChanged" => RevocationReason::AffiliationChanged,
        "superseded" => RevocationReason::Superseded,
        "cessationOfOperation" => RevocationReason::CessationOfOperation,
        "privilegeWithdrawn" => RevocationReason::PrivilegeWithdrawn,
        _ => return None,
    })
}

/// Decodes a serial in hex (as stored in the index) into bytes.
pub fn serial_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Signs a CRL numbered `number` listing every revoked entry of `entries`, as PEM.
pub fn build_crl<'a>(
    issuer: &Issuer<'_, impl SigningKey>,
    entries: impl Iterator<Item = &'a IndexEntry>,
    number: u64,
    now: OffsetDateTime,
) -> Result<String, CaError> {
    let mut revoked_certs = Vec::new();
    for entry in entries {
        let Some(revocation) = &entry.revoked else {
            continue;
        };
        let serial = serial_bytes(&entry.serial).ok_or_else(|| CaError::Damaged {
            path: "index.json".into(),
            detail: format!("serial `{}` is not hex", entry.serial),
        })?;
        // "unspecified" should not be encoded as a reason code (RFC 5280 §5.3.1).
        let reason_code = parse_reason(&revocation.reason)
            .filter(|r| !matches!(r, RevocationReason::Unspecified));
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: revocation.at,
            reason_code,
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + Duration::days(NEXT_UPDATE_DAYS),
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let sign_err = |e: rcgen::Error| CaError::Sign {
        action: "signing the CRL",
        detail: e.to_string(),
    };
    params
        .signed_by(issuer)
        .map_err(sign_err)?
        .pem()
        .map_err(sign_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{CertKind, Revocation};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    use x509_parser::prelude::*;

    #[test]
    fn serial_hex() {
        assert_eq!(serial_bytes("0a1B"), Some(vec![0x0a, 0x1b]));
        assert_eq!(serial_bytes("abc"), None);
        assert_eq!(serial_bytes("zz"), None);
        assert_eq!(serial_bytes(""), None);
    }

    #[test]
    fn reasons_are_all_known() {
        for r in REASONS {
            assert!(parse_reason(r).is_some(), "{r}");
        }
        assert!(parse_reason("because").is_none());
    }

    #[test]
    fn crl_lists_revoked_serials_with_number() {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = Issuer::new(params, KeyPair::generate().unwrap());
        let now = OffsetDateTime::now_utc();
        let mk = |serial: &str, revoked: bool| IndexEntry {
            serial: serial.into(),
            cn: "alice".into(),
            kind: CertKind::Client,
            not_before: now,
            not_after: now,
            sans: vec![],
            revoked: revoked.then(|| Revocation {
                at: now,
                reason: "keyCompromise".into(),
            }),
        };
        let entries = [mk("4a0b", true), mk("4c0d", false)];
        let pem = build_crl(&issuer, entries.iter(), 7, now).unwrap();
        let (_, pem) = parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, crl) = parse_x509_crl(&pem.contents).unwrap();
        let serials: Vec<_> = crl
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect();
        assert_eq!(serials, vec![vec![0x4a, 0x0b]]);
        assert_eq!(crl.crl_number().map(|n| n.to_string()), Some("7".into()));
    }
}
