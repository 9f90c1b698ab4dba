//! The certificate authority, kept in one folder.
//!
//! ```text
//! DIR/ca.pem      the CA certificate (0644): give it to clients and to the gateway
//! DIR/ca.key      the CA key (0600), PKCS#8, encrypted when `init` got a passphrase
//! DIR/index.json  every certificate issued, with revocations and the CRL number (0644)
//! DIR/crl.pem     the current CRL (0644), rewritten by `revoke` and `crl`
//! ```
//!
//! DIR is private (0700): a gateway never reads it. What a gateway reads, `issue-server`
//! writes to another folder shared with the gateway's group, and every new CRL is also
//! written where the gateway reads it (`publish.rs`).
//!
//! All keys are ECDSA P-256. Serial numbers are 16 random bytes (positive). Client
//! certificates carry CN = user and EKU clientAuth; server certificates carry EKU
//! serverAuth and DNS/IP subject alternative names. Every issued certificate is recorded
//! in the index before the call returns.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::crl;
use crate::csr::CsrInfo;
use crate::error::{CaError, KeyFileError};
use crate::files::{self, Existing};
use crate::index::{CertKind, Index, IndexEntry, Revocation};
use crate::keyfile::{self, PassphraseFn};
use crate::names;
use crate::options::truncate;
pub use crate::options::{ClientOptions, InitOptions, ServerOptions, Validity};

/// File name of the CA certificate inside the CA folder.
pub const CA_CERT: &str = "ca.pem";
/// File name of the CA key inside the CA folder.
pub const CA_KEY: &str = "ca.key";
/// File name of the index inside the CA folder.
pub const INDEX: &str = "index.json";
/// File name of the CRL inside the CA folder.
pub const CRL: &str = "crl.pem";

/// A freshly issued certificate (already recorded in the index).
#[derive(Debug)]
pub struct IssuedCert {
    /// Its index entry (serial, CN, validity, …).
    pub entry: IndexEntry,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 DER; `None` for a signed CSR (the requester holds the key).
    pub key_pkcs8_der: Option<Zeroizing<Vec<u8>>>,
}

/// An opened certificate authority.
pub struct Ca {
    /// The CA folder.
    pub(crate) dir: PathBuf,
    /// `ca.pem`, copied next to every issued certificate.
    pub(crate) cert_pem: String,
    /// Name, key identifier and key that sign.
    pub(crate) issuer: Issuer<'static, KeyPair>,
    /// `index.json` as loaded, saved after every change.
    pub(crate) index: Index,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a new CA in `dir` (created 0700 when missing; missing parents 0755).
    ///
    /// Refuses a folder that already holds a CA. Writes `ca.key`, `index.json`, an empty
    /// `crl.pem` and, last, `ca.pem`.
    pub fn init(dir: &Path, opts: &InitOptions) -> Result<Ca, CaError> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        if cert_path.exists() || key_path.exists() {
            return Err(CaError::AlreadyExists {
                dir: dir.to_path_buf(),
            });
        }
        if opts.name.trim().is_empty() {
            return Err(CaError::InvalidUser {
                name: opts.name.clone(),
                why: "a CA name must not be empty",
            });
        }
        // A folder made for the CA beforehand (empty) becomes private too; one with other
        // files in it is left as it is (`init` warns when others may enter it).
        let empty = fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
        files::create_dir(dir).map_err(|e| CaError::io("creating folder", dir, e))?;
        if empty {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(dir, fs::Permissions::from_mode(files::DIR_MODE))
                .map_err(|e| CaError::io("setting the mode of", dir, e))?;
        }

        let (not_before, not_after) = opts.validity.resolve(now())?;
        let key = KeyPair::generate().map_err(sign_err("generating the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&opts.name);
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        params.not_before = not_before;
        params.not_after = not_after;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params
            .self_signed(&key)
            .map_err(sign_err("signing the CA certificate"))?;

        let key_der = Zeroizing::new(key.serialize_der());
        keyfile::write_private_key(
            &key_path,
            &key_der,
            opts.passphrase.as_ref().map(|p| p.as_str()),
            Existing::Refuse,
        )
        .map_err(|e| match e {
            KeyFileError::Exists { .. } => CaError::AlreadyExists {
                dir: dir.to_path_buf(),
            },
            other => CaError::Key(other),
        })?;

        let mut ca = Ca {
            dir: dir.to_path_buf(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            index: Index::default(),
        };
        ca.write_crl()?;
        write_public(&cert_path, ca.cert_pem.as_bytes(), Existing::Refuse)?;
        Ok(ca)
    }

    /// Opens the CA in `dir`; `passphrase` is asked only when `ca.key` is encrypted.
    pub fn open(dir: &Path, passphrase: &mut PassphraseFn<'_>) -> Result<Ca, CaError> {
        let cert_pem = read_ca_cert(dir)?;
        let index = Ca::load_index(dir)?;
        let key_path = dir.join(CA_KEY);
        let key = keyfile::load_private_key(&key_path, passphrase)?;
        let key = KeyPair::try_from(&key).map_err(|e| KeyFileError::UnsupportedKey {
            path: key_path.clone(),
            detail: e.to_string(),
        })?;
        let damaged = |detail: String| CaError::Damaged {
            path: dir.join(CA_CERT),
            detail,
        };
        let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| damaged(e.to_string()))?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| damaged(e.to_string()))?;
        if x509.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(CaError::KeyMismatch {
                key: key_path,
                cert: dir.join(CA_CERT),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| damaged(e.to_string()))?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            cert_pem,
            issuer,
            index,
        })
    }

    /// Reads `index.json` of the CA in `dir` without its key (for `list`).
    pub fn load_index(dir: &Path) -> Result<Index, CaError> {
        if !dir.join(CA_CERT).exists() {
            return Err(CaError::NoCa {
                dir: dir.to_path_buf(),
            });
        }
        let path = dir.join(INDEX);
        let text = fs::read_to_string(&path).map_err(|e| CaError::io("reading", &path, e))?;
        Index::from_json(&path, &text)
    }

    /// The CA folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Every certificate issued so far, oldest first.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.index.certs
    }

    /// Issues a server certificate with a new key.
    pub fn issue_server(&mut self, opts: &ServerOptions) -> Result<IssuedCert, CaError> {
        opts.check()?;
        let mut sans = Vec::new();
        let mut san_text = Vec::new();
        for name in &opts.dns {
            let ia5 = names::dns_name(name)?;
            sans.push(SanType::DnsName(ia5));
            san_text.push(format!("DNS:{name}"));
        }
        for ip in &opts.ips {
            sans.push(SanType::IpAddress(*ip));
            san_text.push(format!("IP:{ip}"));
        }
        let cn = match (opts.dns.first(), opts.ips.first()) {
            (Some(name), _) => name.clone(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => return Err(CaError::NoServerNames),
        };
        let key = KeyPair::generate().map_err(sign_err("generating the server key"))?;
        let mut params =
            self.leaf_params(&cn, &opts.validity, ExtendedKeyUsagePurpose::ServerAuth)?;
        params.subject_alt_names = sans;
        self.sign_and_record(params, &key, CertKind::Server, san_text, Some(&key))
    }

    /// Issues a client certificate for `user` (its CN) with a new key.
    pub fn issue_client(
        &mut self,
        user: &str,
        opts: &ClientOptions,
    ) -> Result<IssuedCert, CaError> {
        names::check_user(user)?;
        let key = KeyPair::generate().map_err(sign_err("generating the client key"))?;
        let params = self.leaf_params(user, &opts.validity, ExtendedKeyUsagePurpose::ClientAuth)?;
        self.sign_and_record(params, &key, CertKind::Client, Vec::new(), Some(&key))
    }

    /// Signs a PEM certificate signing request as a client certificate.
    ///
    /// The CN of the request is the user; everything else the request asks for (SANs,
    /// key usages, CA flags) is ignored: the CA decides what a client certificate holds.
    pub fn sign_csr(&mut self, csr_pem: &str, opts: &ClientOptions) -> Result<IssuedCert, CaError> {
        let request = CsrInfo::parse(csr_pem)?;
        self.sign_request(&request, opts)
    }

    /// Signs a request already read (and its signature checked) by [`CsrInfo::parse`].
    pub fn sign_request(
        &mut self,
        request: &CsrInfo,
        opts: &ClientOptions,
    ) -> Result<IssuedCert, CaError> {
        names::check_user(&request.cn)?;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&request.spki_der).map_err(|e| {
            CaError::BadCsr {
                detail: format!("unsupported public key ({e})"),
            }
        })?;
        let params = self.leaf_params(
            &request.cn,
            &opts.validity,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        self.sign_and_record(params, &public_key, CertKind::Client, Vec::new(), None)
    }

    /// Revokes what `target` names: one serial, or every unrevoked certificate of a user
    /// (CN). Saves the index and rewrites `crl.pem`. Returns the entries revoked now.
    pub fn revoke(&mut self, target: &str, reason: &str) -> Result<Vec<IndexEntry>, CaError> {
        if crl::parse_reason(reason).is_none() {
            return Err(CaError::InvalidReason {
                reason: reason.to_string(),
            });
        }
        let matches = self.index.matching(target);
        if matches.is_empty() {
            return Err(CaError::UnknownTarget {
                dir: self.dir.clone(),
                target: target.to_string(),
                known: self.index.names(),
            });
        }
        let at = truncate(now());
        let mut revoked = Vec::new();
        for i in matches {
            if let Some(entry) = self.index.certs.get_mut(i) {
                if entry.revoked.is_none() {
                    entry.revoked = Some(Revocation {
                        at,
                        reason: reason.to_string(),
                    });
                    revoked.push(entry.clone());
                }
            }
        }
        if revoked.is_empty() {
            return Err(CaError::AlreadyRevoked {
                target: target.to_string(),
            });
        }
        self.write_crl()?;
        Ok(revoked)
    }

    /// Signs a new CRL (next CRL number, saved in the index) and returns it as PEM.
    pub fn crl_pem(&mut self) -> Result<String, CaError> {
        let number = self.index.next_crl_number();
        let pem = crl::build_crl(&self.issuer, self.index.revoked(), number, now())?;
        self.save_index()?;
        Ok(pem)
    }

    /// Signs a new CRL and writes it to `DIR/crl.pem` and every published copy (see
    /// [`Ca::publish_crl_to`]); returns `DIR/crl.pem`.
    pub fn write_crl(&mut self) -> Result<PathBuf, CaError> {
        let path = self.dir.join(CRL);
        self.write_crl_everywhere()?;
        Ok(path)
    }

    /// Writes a server certificate and its key (unencrypted, 0600: the daemon starts
    /// unattended) to `out/server.pem` and `out/server.key`, and `out/ca.pem`.
    pub fn write_server_files(
        &self,
        issued: &IssuedCert,
        out: &Path,
        existing: Existing,
    ) -> Result<Vec<PathBuf>, CaError> {
        self.write_files(issued, out, "server", None, existing)
    }

    /// Writes a client certificate and its key to `out/USER.pem` and `out/USER.key`
    /// (encrypted with `passphrase` unless `None`), and `out/ca.pem`.
    pub fn write_client_files(
        &self,
        issued: &IssuedCert,
        out: &Path,
        passphrase: Option<&str>,
        existing: Existing,
    ) -> Result<Vec<PathBuf>, CaError> {
        let user = issued.entry.cn.clone();
        self.write_files(issued, out, &user, passphrase, existing)
    }

    /// Writes `out/STEM.key` (if there is a key), `out/STEM.pem` and `out/ca.pem`.
    fn write_files(
        &self,
        issued: &IssuedCert,
        out: &Path,
        stem: &str,
        passphrase: Option<&str>,
        existing: Existing,
    ) -> Result<Vec<PathBuf>, CaError> {
        let key_path = out.join(format!("{stem}.key"));
        let cert_path = out.join(format!("{stem}.pem"));
        self.check_out(out, stem, existing)?;
        files::create_dir(out).map_err(|e| CaError::io("creating folder", out, e))?;

        let mut written = Vec::new();
        if let Some(der) = &issued.key_pkcs8_der {
            keyfile::write_private_key(&key_path, der, passphrase, existing)?;
            written.push(key_path);
        }
        write_public(&cert_path, issued.cert_pem.as_bytes(), existing)?;
        written.push(cert_path);
        if let Some(ca_path) = self.write_ca_copy(out)? {
            written.push(ca_path);
        }
        Ok(written)
    }

    /// Checks, before anything is issued or written, that `out/STEM.pem`, `out/STEM.key`
    /// and `out/ca.pem` (unless it already holds this CA) may be written.
    ///
    /// With [`Existing::Refuse`], an existing file is an error that names it.
    pub fn check_out(&self, out: &Path, stem: &str, existing: Existing) -> Result<(), CaError> {
        if existing == Existing::Replace {
            return Ok(());
        }
        for name in [format!("{stem}.pem"), format!("{stem}.key")] {
            let path = out.join(name);
            if fs::symlink_metadata(&path).is_ok() {
                return Err(KeyFileError::Exists { path }.into());
            }
        }
        let path = out.join(CA_CERT);
        match fs::read_to_string(&path) {
            Ok(text) if text != self.cert_pem => Err(KeyFileError::Exists { path }.into()),
            _ => Ok(()),
        }
    }

    /// Writes `out/ca.pem` unless it already holds our certificate.
    pub(crate) fn write_ca_copy(&self, out: &Path) -> Result<Option<PathBuf>, CaError> {
        let path = out.join(CA_CERT);
        if fs::read_to_string(&path).is_ok_and(|t| t == self.cert_pem) {
            return Ok(None);
        }
        write_public(&path, self.cert_pem.as_bytes(), Existing::Replace)?;
        Ok(Some(path))
    }

    /// Certificate parameters shared by every leaf certificate.
    fn leaf_params(
        &self,
        cn: &str,
        validity: &Validity,
        eku: ExtendedKeyUsagePurpose,
    ) -> Result<CertificateParams, CaError> {
        let (not_before, not_after) = validity.resolve(now())?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(cn);
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        params.not_before = not_before;
        params.not_after = not_after;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        Ok(params)
    }

    /// Signs `params` for `public_key`, records the certificate and saves the index.
    fn sign_and_record(
        &mut self,
        params: CertificateParams,
        public_key: &impl PublicKeyData,
        kind: CertKind,
        sans: Vec<String>,
        key: Option<&KeyPair>,
    ) -> Result<IssuedCert, CaError> {
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(sign_err("signing the certificate"))?;
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| hex(&s.to_bytes()))
            .unwrap_or_default();
        let entry = IndexEntry {
            serial,
            cn: cn_of(&params),
            kind,
            not_before: params.not_before,
            not_after: params.not_after,
            sans,
            revoked: None,
        };
        self.index.certs.push(entry.clone());
        self.save_index()?;
        Ok(IssuedCert {
            entry,
            cert_pem: cert.pem(),
            key_pkcs8_der: key.map(|k| Zeroizing::new(k.serialize_der())),
        })
    }

    /// Writes `index.json`.
    pub(crate) fn save_index(&self) -> Result<(), CaError> {
        let path = self.dir.join(INDEX);
        write_public(&path, self.index.to_json().as_bytes(), Existing::Replace)
    }
}

/// Reads `DIR/ca.pem`, or says that `dir` holds no CA.
fn read_ca_cert(dir: &Path) -> Result<String, CaError> {
    let path = dir.join(CA_CERT);
    fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CaError::NoCa {
                dir: dir.to_path_buf(),
            }
        } else {
            CaError::io("reading", &path, e)
        }
    })
}

/// Writes a non-secret file (0644).
pub(crate) fn write_public(
    path: &Path,
    contents: &[u8],
    existing: Existing,
) -> Result<(), CaError> {
    files::write_file(path, contents, files::PUBLIC_MODE, existing).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists {
                path: path.to_path_buf(),
            }
            .into()
        } else {
            CaError::io("writing", path, e)
        }
    })
}

/// A distinguished name with only a CN.
fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// The CN of `params`, as text.
fn cn_of(params: &CertificateParams) -> String {
    match params.distinguished_name.get(&DnType::CommonName) {
        Some(rcgen::DnValue::Utf8String(s)) => s.clone(),
        Some(rcgen::DnValue::PrintableString(s)) => s.as_str().to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// 16 random bytes, positive and without a leading zero byte.
fn random_serial() -> Result<[u8; 16], CaError> {
    let mut serial = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut serial)
        .map_err(|_| CaError::Sign {
            action: "making a serial number",
            detail: "the system random number generator failed".to_string(),
        })?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

/// Lower-case hex without separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The current time (UTC).
fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Maps an rcgen error to [`CaError::Sign`] with what was being done.
fn sign_err(action: &'static str) -> impl Fn(rcgen::Error) -> CaError {
    move |e| CaError::Sign {
        action,
        detail: e.to_string(),
    }
}
