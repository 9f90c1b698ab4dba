//! Hardware-key failures ([`Pkcs11Failure`]) in words: a URI that cannot be used, a module
//! that is missing or is no PKCS#11 module, a token or key that is not there, a wrong or
//! locked PIN, and the PKCS#11 return codes (`CKR_…`) behind the rest.

use std::path::PathBuf;

use cryptoki::error::{Error as CkError, RvError};

/// Something went wrong between virtgate and a PKCS#11 token; each names the module,
/// token or key involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Failure {
    /// The `key` setting is not a usable `pkcs11:` URI.
    #[error("the key URI `{uri}` cannot be used: {reason}")]
    BadUri {
        /// The URI as written.
        uri: String,
        /// What is wrong with it.
        reason: String,
        /// It tried to carry a PIN (`pin-value`, `pin-source`).
        pin: bool,
    },
    /// A `pkcs11:` key but no module named anywhere.
    #[error("the key `{uri}` is on a PKCS#11 token, but no PKCS#11 module is named")]
    NoModule {
        /// The URI.
        uri: String,
        /// Module files found on this machine, for the hint.
        candidates: Vec<PathBuf>,
    },
    /// The module file does not exist.
    #[error("the PKCS#11 module {} does not exist", path.display())]
    ModuleMissing {
        /// The path as configured.
        path: PathBuf,
        /// Module files found on this machine, for the hint.
        candidates: Vec<PathBuf>,
    },
    /// The file exists but is no PKCS#11 module (not a library, or no C_GetFunctionList).
    #[error("{} is not a PKCS#11 module: {reason}", path.display())]
    NotAModule {
        /// The file.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },
    /// No slot holds a token the URI matches.
    #[error("no token matches {wanted} in the PKCS#11 module {}{}", module.display(), found(.available))]
    TokenNotFound {
        /// The module searched.
        module: PathBuf,
        /// What the URI asked for, in words.
        wanted: String,
        /// `"label" (manufacturer, serial N)` of each token present.
        available: Vec<String>,
    },
    /// The token refused the PIN (CKR_PIN_INCORRECT); only one attempt is made.
    #[error("wrong PIN for token \"{token}\" (CKR_PIN_INCORRECT){}", pin_state(.state))]
    WrongPin {
        /// The token's label.
        token: String,
        /// What the token says about its PIN counter now, if anything.
        state: Option<&'static str>,
    },
    /// The token locked its user PIN after too many wrong ones.
    #[error("the PIN of token \"{token}\" is locked (CKR_PIN_LOCKED)")]
    PinLocked {
        /// The token's label.
        token: String,
    },
    /// A PIN is needed, no other source gave one, and there is no terminal.
    #[error("token \"{token}\" needs its PIN and there is no terminal to ask for it")]
    NoTerminal {
        /// The token's label.
        token: String,
    },
    /// No private key on the token matches the URI.
    #[error("no private key matches {wanted} on token \"{token}\"{}", found(.available))]
    KeyNotFound {
        /// The token's label.
        token: String,
        /// What the URI asked for, in words.
        wanted: String,
        /// `"label" (id …)` of each private key the token has.
        available: Vec<String>,
    },
    /// Several private keys match and the URI does not say which.
    #[error("{count} private keys match {wanted} on token \"{token}\"")]
    KeyAmbiguous {
        /// The token's label.
        token: String,
        /// What the URI asked for, in words.
        wanted: String,
        /// How many matched.
        count: usize,
    },
    /// The key is of a kind virtgate cannot sign TLS with (P-521, Ed25519, a tiny RSA key…).
    #[error("the key {key} on token \"{token}\" cannot sign for TLS: {what}")]
    UnsupportedKey {
        /// The token's label.
        token: String,
        /// The key, in words.
        key: String,
        /// Its kind.
        what: String,
    },
    /// Making a key on the token needs a label for it.
    #[error("cannot make a key on token \"{token}\": the URI `{uri}` names no object")]
    NeedsLabel {
        /// The token's label.
        token: String,
        /// The URI.
        uri: String,
    },
    /// The token's key and the certificate file are not one pair.
    #[error("the key {uri} does not belong to the certificate {}", cert.display())]
    KeyMismatch {
        /// The key's URI.
        uri: String,
        /// The certificate file.
        cert: PathBuf,
    },
    /// Any other call that failed: the PKCS#11 function and its return code in words.
    #[error("{action} failed with the PKCS#11 module {}: {reason}", module.display())]
    Call {
        /// The module.
        module: PathBuf,
        /// What was being done (`listing the slots`, `signing with object "x"`).
        action: String,
        /// `CKR_…: words`.
        reason: String,
    },
}

fn found(available: &[String]) -> String {
    if available.is_empty() {
        "; it has none".into()
    } else {
        format!("; it has: {}", available.join(", "))
    }
}

fn pin_state(state: &Option<&'static str>) -> String {
    state.map(|s| format!("; {s}")).unwrap_or_default()
}

impl Pkcs11Failure {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match self {
            Pkcs11Failure::BadUri { pin: true, .. } => {
                "remove the PIN from the URI: virtgate asks for it, or takes it from \
                 --passphrase-file, $VIRTGATE_KEY_PASSPHRASE or `passphrase_command`"
                    .into()
            }
            Pkcs11Failure::BadUri { .. } => "write the key as \
                 `pkcs11:token=LABEL;object=KEY` (RFC 7512; percent-encode spaces and `;` as \
                 %20 and %3B); `pkcs11-tool --module MODULE --list-objects --login` shows \
                 the labels"
                .into(),
            Pkcs11Failure::NoModule { candidates, .. } => format!(
                "set `pkcs11_module = \"/path/to/module.so\"` in the profile or pass \
                 --pkcs11-module FILE{}",
                candidates_text(candidates)
            ),
            Pkcs11Failure::ModuleMissing { candidates, .. } => format!(
                "check `pkcs11_module` in the profile (or --pkcs11-module); the module comes \
                 with the token's software (opensc, ykcs11, softhsm2){}",
                candidates_text(candidates)
            ),
            Pkcs11Failure::NotAModule { .. } => "`pkcs11_module` must be the token's PKCS#11 \
                 library, e.g. /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so (OpenSC: smartcards, \
                 YubiKey PIV), /usr/lib/x86_64-linux-gnu/libykcs11.so or \
                 /usr/lib/softhsm/libsofthsm2.so"
                .into(),
            Pkcs11Failure::TokenNotFound { available, .. } if available.is_empty() => {
                "plug the token in (is its reader seen by `pkcs11-tool --module MODULE \
                 --list-slots`?), or check that the module is the one for this token"
                    .into()
            }
            Pkcs11Failure::TokenNotFound { .. } => "fix `token=` in the URI: it is the \
                 token's label, as `pkcs11-tool --module MODULE --list-token-slots` shows it"
                .into(),
            Pkcs11Failure::WrongPin { .. } => "no second attempt was made, so as not to lock \
                 the token; check the PIN (--passphrase-file, $VIRTGATE_KEY_PASSPHRASE or \
                 `passphrase_command` give it, else you are asked) and run the command again"
                .into(),
            Pkcs11Failure::PinLocked { .. } => "unblock the PIN with the token's PUK or \
                 security officer PIN (e.g. `pkcs11-tool --login --login-type so --init-pin`, \
                 or `ykman piv access unblock-pin` for a YubiKey)"
                .into(),
            Pkcs11Failure::NoTerminal { .. } => "give the PIN with --passphrase-file FILE, the \
                 VIRTGATE_KEY_PASSPHRASE environment variable, or `passphrase_command` in the \
                 profile"
                .into(),
            Pkcs11Failure::KeyNotFound { .. } | Pkcs11Failure::KeyAmbiguous { .. } => {
                "fix `object=` (the key's label) or `id=` in the URI; `pkcs11-tool --module \
                 MODULE --list-objects --type privkey --login` lists the keys (or make one with \
                 `virtgate enroll --key pkcs11:…`)"
                    .into()
            }
            Pkcs11Failure::UnsupportedKey { .. } => "use an EC P-256 or P-384 key, or RSA of \
                 2048 bits or more (`virtgate enroll --key pkcs11:…` makes a P-256 key)"
                .into(),
            Pkcs11Failure::NeedsLabel { .. } => {
                "add `;object=LABEL` to the URI: the new key gets that label".into()
            }
            Pkcs11Failure::KeyMismatch { .. } => "`cert` must be the certificate signed for \
                 this key: send the CSR `virtgate enroll` wrote for the token to the admin and \
                 use the certificate that comes back"
                .into(),
            Pkcs11Failure::Call { .. } => "check the token is still plugged in; \
                 `pkcs11-tool --module MODULE --list-token-slots` shows what the module sees"
                .into(),
        }
    }
}

fn candidates_text(candidates: &[PathBuf]) -> String {
    if candidates.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        format!("; modules on this machine: {}", list.join(", "))
    }
}

/// A return code as `CKR_NAME` (e.g. `CKR_DEVICE_REMOVED`), from cryptoki's variant name.
pub fn ckr_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR_");
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// A cryptoki error in a few words: the return code's name and, for the usual ones, what
/// it means.
pub fn ck_reason(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => {
            let words = match rv {
                RvError::TokenNotPresent => "the token was removed",
                RvError::DeviceRemoved => "the token was removed",
                RvError::DeviceError => "the token or its reader reported an error",
                RvError::SessionHandleInvalid | RvError::SessionClosed => {
                    "the session with the token ended"
                }
                RvError::UserNotLoggedIn => "not logged in to the token",
                RvError::KeyFunctionNotPermitted => "the key may not be used for this",
                RvError::MechanismInvalid => "the token does not offer this algorithm",
                RvError::FunctionNotSupported => "the module does not implement this call",
                RvError::TokenWriteProtected => "the token is write-protected",
                RvError::DeviceMemory => "the token is full",
                _ => "",
            };
            let name = ckr_name(*rv);
            match words {
                "" => format!("{function}: {name}"),
                w => format!("{function}: {name} ({w})"),
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_codes_are_named_as_in_the_standard() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(ckr_name(RvError::DeviceRemoved), "CKR_DEVICE_REMOVED");
        let e = CkError::Pkcs11(RvError::DeviceRemoved, cryptoki::context::Function::Sign);
        let r = ck_reason(&e);
        assert!(
            r.contains("CKR_DEVICE_REMOVED (the token was removed)"),
            "{r}"
        );
    }

    #[test]
    fn messages_list_what_exists() {
        let e = Pkcs11Failure::TokenNotFound {
            module: "/m.so".into(),
            wanted: "token \"x\"".into(),
            available: vec!["\"alice\" (SoftHSM project, serial 1)".into()],
        };
        assert_eq!(
            e.to_string(),
            "no token matches token \"x\" in the PKCS#11 module /m.so; it has: \"alice\" \
             (SoftHSM project, serial 1)"
        );
        let e = Pkcs11Failure::WrongPin {
            token: "alice".into(),
            state: Some("the token says one more wrong PIN locks it"),
        };
        assert!(e
            .to_string()
            .ends_with("(CKR_PIN_INCORRECT); the token says one more wrong PIN locks it"));
        assert!(e.hint().contains("no second attempt"));
    }
}
