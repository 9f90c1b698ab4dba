//! One PKCS#11 token, opened and logged in once: the module loaded (cryptoki), the slot
//! whose token matches the URI, one session that stays open (and logged in) for the life
//! of the process, the private keys on it, and a new EC P-256 key pair made on it.
//!
//! The PIN is asked once, and a wrong PIN is never retried: a token locks its PIN after a
//! few wrong ones (a YubiKey after 3), so guessing again in a loop would lock it. The
//! session sits behind a mutex: cryptoki sessions may move between threads but not be used
//! by two at once, and TLS handshakes of one process (a shared `virtgate up` connection
//! that reconnects) may come from any runtime thread.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::der;
use super::uri::{hex, Pkcs11Uri};
use crate::error::{ck_reason, Error, Pkcs11Failure};

/// Where the PIN comes from: called with the token's label, at most once.
pub type PinSource<'a> = &'a dyn Fn(&str) -> Result<Zeroizing<String>, Error>;

/// A logged-in token.
pub struct Token {
    /// The module's file, for messages.
    module: PathBuf,
    /// The token's label, for messages and the PIN prompt.
    label: String,
    /// The one session, logged in as the user; sessions are `Send` but not `Sync`.
    session: Mutex<Session>,
    /// The signature mechanisms virtgate uses that the token offers (asked one by one:
    /// listing them all makes cryptoki log every vendor mechanism it does not know).
    mechanisms: Vec<MechanismType>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("module", &self.module)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// The elliptic curves virtgate signs TLS with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
}

impl Curve {
    /// Length of one coordinate (and of `r` and `s`) in bytes.
    pub fn size(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

/// What kind of key, with the public half when the token shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA: the curve, and the uncompressed point (`04‖X‖Y`) of its public key object.
    Ec {
        /// The curve from CKA_EC_PARAMS.
        curve: Curve,
        /// The public point, `None` when the token has no public key object for it.
        point: Option<Vec<u8>>,
    },
    /// RSA: the modulus and public exponent (big-endian).
    Rsa {
        /// CKA_MODULUS.
        modulus: Vec<u8>,
        /// CKA_PUBLIC_EXPONENT.
        exponent: Vec<u8>,
    },
}

/// A private key on the token.
#[derive(Debug, Clone)]
pub struct TokenKey {
    /// The object to sign with (valid for the session's life).
    pub handle: ObjectHandle,
    /// CKA_LABEL, for messages.
    pub label: String,
    /// CKA_ID, for messages (and to find its public key object).
    pub id: Vec<u8>,
    /// Its kind and public half.
    pub kind: KeyKind,
}

impl TokenKey {
    /// `object "alice" (id 01)`, for messages.
    pub fn describe(&self) -> String {
        format!("object \"{}\" (id {})", self.label, hex(&self.id))
    }
}

/// Module files found in the usual places, for hints when none is configured or the
/// configured one is missing.
pub fn candidate_modules() -> Vec<PathBuf> {
    // /usr/lib first: Debian's documented /usr/lib/softhsm/libsofthsm2.so is a link there
    let dirs = [
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/local/lib",
    ];
    let names = [
        "opensc-pkcs11.so",
        "libykcs11.so",
        "softhsm/libsofthsm2.so",
        "p11-kit-proxy.so",
    ];
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
    for name in names {
        for dir in dirs {
            let p = Path::new(dir).join(name);
            if let Ok(real) = std::fs::canonicalize(&p) {
                if !found.iter().any(|(_, r)| *r == real) {
                    found.push((p, real));
                }
            }
        }
    }
    found.into_iter().map(|(p, _)| p).collect()
}

/// Load and initialise a module; a module already initialised in this process is fine.
fn load_module(path: &Path) -> Result<Pkcs11, Error> {
    if !path.exists() {
        return Err(Pkcs11Failure::ModuleMissing {
            path: path.to_owned(),
            candidates: candidate_modules(),
        }
        .into());
    }
    let not_a_module = |reason: String| Pkcs11Failure::NotAModule {
        path: path.to_owned(),
        reason,
    };
    let pkcs11 = Pkcs11::new(path).map_err(|e| match e {
        CkError::LibraryLoading(l) => not_a_module(format!("it cannot be loaded ({l})")),
        CkError::MissingSymbol(s) => not_a_module(format!("it has no {s}")),
        other => not_a_module(other.to_string()),
    })?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(pkcs11),
        Err(e) => Err(call_failed(path, "initialising the module", &e)),
    }
}

fn call_failed(module: &Path, action: &str, e: &CkError) -> Error {
    Pkcs11Failure::Call {
        module: module.to_owned(),
        action: action.to_owned(),
        reason: ck_reason(e),
    }
    .into()
}

/// A token's fields as text (cryptoki trims the padding).
fn token_matches(uri: &Pkcs11Uri, slot: Slot, info: &TokenInfo) -> bool {
    let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    eq(&uri.token, info.label())
        && eq(&uri.manufacturer, info.manufacturer_id())
        && eq(&uri.model, info.model())
        && eq(&uri.serial, info.serial_number())
        && uri.slot_id.is_none_or(|s| s == slot.id())
}

impl Token {
    /// Open the first token the URI matches in `module` and log in with the PIN from
    /// `pin` (asked only when the token needs one). `write` opens a read-write session
    /// (to make a key).
    pub fn open(
        uri: &Pkcs11Uri,
        module: &Path,
        pin: PinSource<'_>,
        write: bool,
    ) -> Result<Token, Error> {
        let pkcs11 = load_module(module)?;
        let slots = pkcs11
            .get_slots_with_token()
            .map_err(|e| call_failed(module, "listing the slots", &e))?;
        let mut available = Vec::new();
        let mut chosen = None;
        for slot in slots {
            // a slot with a blank token (SoftHSM always has a free one) holds no key
            let Ok(info) = pkcs11.get_token_info(slot) else {
                continue;
            };
            if !info.token_initialized() {
                continue;
            }
            available.push(format!(
                "\"{}\" ({}, serial {})",
                info.label(),
                info.manufacturer_id(),
                info.serial_number()
            ));
            if chosen.is_none() && token_matches(uri, slot, &info) {
                chosen = Some((slot, info));
            }
        }
        let Some((slot, info)) = chosen else {
            return Err(Pkcs11Failure::TokenNotFound {
                module: module.to_owned(),
                wanted: uri.describe_token(),
                available,
            }
            .into());
        };
        let label = info.label().to_owned();
        tracing::debug!(token = %label, slot = %slot, "PKCS#11 token found");
        let session = match write {
            true => pkcs11.open_rw_session(slot),
            false => pkcs11.open_ro_session(slot),
        }
        .map_err(|e| call_failed(module, &format!("opening a session on \"{label}\""), &e))?;
        login(&pkcs11, slot, &session, &info, module, pin)?;
        let mechanisms = [
            MechanismType::ECDSA,
            MechanismType::RSA_PKCS_PSS,
            MechanismType::RSA_PKCS,
        ]
        .into_iter()
        .filter(|m| {
            // only "no such mechanism" counts as no: a token that will not say may still sign
            !matches!(
                pkcs11.get_mechanism_info(slot, *m),
                Err(CkError::Pkcs11(RvError::MechanismInvalid, _))
            )
        })
        .collect();
        Ok(Token {
            module: module.to_owned(),
            label,
            session: Mutex::new(session),
            mechanisms,
        })
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the token offers `mechanism` (one of CKM_ECDSA, CKM_RSA_PKCS_PSS,
    /// CKM_RSA_PKCS).
    pub fn offers(&self, mechanism: MechanismType) -> bool {
        self.mechanisms.contains(&mechanism)
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        // a panic while signing cannot leave the session half-used: take it back
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failed(&self, action: String, e: &CkError) -> Error {
        call_failed(&self.module, &action, e)
    }

    /// The one private key the URI names (by `object=` label and/or `id=`).
    pub fn find_key(&self, uri: &Pkcs11Uri) -> Result<TokenKey, Error> {
        let session = self.session();
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(o) = &uri.object {
            template.push(Attribute::Label(o.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let found = session
            .find_objects(&template)
            .map_err(|e| self.failed(format!("looking for keys on \"{}\"", self.label), &e))?;
        match found.len() {
            1 => self.describe_key(&session, found[0]),
            0 => {
                let all = session
                    .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
                    .unwrap_or_default();
                let available = all
                    .iter()
                    .map(|h| {
                        let (label, id) = label_and_id(&session, *h);
                        format!("\"{label}\" (id {})", hex(&id))
                    })
                    .collect();
                Err(Pkcs11Failure::KeyNotFound {
                    token: self.label.clone(),
                    wanted: uri.describe_key(),
                    available,
                }
                .into())
            }
            count => Err(Pkcs11Failure::KeyAmbiguous {
                token: self.label.clone(),
                wanted: uri.describe_key(),
                count,
            }
            .into()),
        }
    }

    /// Read a private key's kind and public half.
    fn describe_key(&self, session: &Session, handle: ObjectHandle) -> Result<TokenKey, Error> {
        let (label, id) = label_and_id(session, handle);
        let attrs = session
            .get_attributes(
                handle,
                &[
                    AttributeType::KeyType,
                    AttributeType::EcParams,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                ],
            )
            .map_err(|e| self.failed(format!("reading the key \"{label}\""), &e))?;
        let (mut key_type, mut params, mut modulus, mut exponent) = (None, None, None, None);
        for a in attrs {
            match a {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::EcParams(p) => params = Some(p),
                Attribute::Modulus(m) => modulus = Some(m),
                Attribute::PublicExponent(e) => exponent = Some(e),
                _ => {}
            }
        }
        let unsupported = |what: String| -> Error {
            Pkcs11Failure::UnsupportedKey {
                token: self.label.clone(),
                key: format!("\"{label}\""),
                what,
            }
            .into()
        };
        let kind = match (key_type, params, modulus, exponent) {
            (Some(KeyType::EC), Some(p), _, _) => {
                let curve = match p.as_slice() {
                    der::P256_PARAMS => Curve::P256,
                    der::P384_PARAMS => Curve::P384,
                    _ => {
                        return Err(unsupported(
                            "an EC key on a curve other than P-256 or P-384".into(),
                        ))
                    }
                };
                KeyKind::Ec {
                    curve,
                    point: self.public_point(session, &label, &id, curve),
                }
            }
            (Some(KeyType::RSA), _, Some(modulus), Some(exponent)) => {
                let bits = modulus.iter().skip_while(|b| **b == 0).count() * 8;
                if bits < 2048 {
                    return Err(unsupported(format!("an RSA key of {bits} bits")));
                }
                KeyKind::Rsa { modulus, exponent }
            }
            (Some(t), ..) => return Err(unsupported(format!("a key of type {t}"))),
            (None, ..) => return Err(unsupported("a key of unknown type".into())),
        };
        Ok(TokenKey {
            handle,
            label,
            id,
            kind,
        })
    }

    /// The EC point of the public key object with the same id (else label).
    fn public_point(
        &self,
        session: &Session,
        label: &str,
        id: &[u8],
        curve: Curve,
    ) -> Option<Vec<u8>> {
        let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
        if id.is_empty() {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        } else {
            template.push(Attribute::Id(id.to_vec()));
        }
        let handle = *session.find_objects(&template).ok()?.first()?;
        let attrs = session
            .get_attributes(handle, &[AttributeType::EcPoint])
            .ok()?;
        attrs.into_iter().find_map(|a| match a {
            Attribute::EcPoint(p) => der::ec_point(&p, curve.size()),
            _ => None,
        })
    }

    /// Make an EC P-256 key pair on the token labelled `label`: the private half stays
    /// there (CKA_TOKEN, CKA_SENSITIVE, not CKA_EXTRACTABLE).
    pub fn generate_p256(&self, label: &str, id: &[u8]) -> Result<TokenKey, Error> {
        let session = self.session();
        let common = |private: bool| {
            vec![
                Attribute::Token(true),
                Attribute::Private(private),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
            ]
        };
        let mut public = common(false);
        public.extend([
            Attribute::EcParams(der::P256_PARAMS.to_vec()),
            Attribute::Verify(true),
        ]);
        let mut private = common(true);
        private.extend([
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
        ]);
        let (_, handle) = session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(|e| self.failed(format!("making a P-256 key on \"{}\"", self.label), &e))?;
        tracing::debug!(token = %self.label, %label, "made a P-256 key pair on the token");
        self.describe_key(&session, handle)
    }

    /// Sign `data` with `key` by `mechanism`.
    pub fn sign(
        &self,
        key: &TokenKey,
        mechanism: &Mechanism,
        data: &[u8],
    ) -> Result<Vec<u8>, Error> {
        self.session()
            .sign(mechanism, key.handle, data)
            .map_err(|e| {
                self.failed(
                    format!("signing with \"{}\" on \"{}\"", key.label, self.label),
                    &e,
                )
            })
    }
}

/// CKA_LABEL (lossy text) and CKA_ID of an object; empty when the token will not say.
fn label_and_id(session: &Session, handle: ObjectHandle) -> (String, Vec<u8>) {
    let attrs = session
        .get_attributes(handle, &[AttributeType::Label, AttributeType::Id])
        .unwrap_or_default();
    let (mut label, mut id) = (String::new(), Vec::new());
    for a in attrs {
        match a {
            Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
            Attribute::Id(i) => id = i,
            _ => {}
        }
    }
    (label, id)
}

/// Log the session in as the user, once. A token with a PIN pad takes the PIN there.
fn login(
    pkcs11: &Pkcs11,
    slot: Slot,
    session: &Session,
    info: &TokenInfo,
    module: &Path,
    pin: PinSource<'_>,
) -> Result<(), Error> {
    let label = info.label();
    if !info.login_required() {
        return Ok(());
    }
    if info.user_pin_locked() {
        return Err(Pkcs11Failure::PinLocked {
            token: label.to_owned(),
        }
        .into());
    }
    let result = if info.protected_authentication_path() {
        eprintln!("enter the PIN of token \"{label}\" on its PIN pad");
        session.login(UserType::User, None)
    } else {
        let pin = pin(label)?;
        session.login(
            UserType::User,
            Some(&AuthPin::from(pin.as_str().to_owned())),
        )
    };
    match result {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
            let state = pkcs11.get_token_info(slot).ok().and_then(|now| {
                if now.user_pin_locked() {
                    Some("the token has now locked its PIN")
                } else if now.user_pin_final_try() {
                    Some("the token says one more wrong PIN locks it")
                } else if now.user_pin_count_low() {
                    Some("the token says few tries are left")
                } else {
                    None
                }
            });
            Err(Pkcs11Failure::WrongPin {
                token: label.to_owned(),
                state,
            }
            .into())
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Pkcs11Failure::PinLocked {
            token: label.to_owned(),
        }
        .into()),
        Err(e) => Err(call_failed(
            module,
            &format!("logging in to \"{label}\""),
            &e,
        )),
    }
}
