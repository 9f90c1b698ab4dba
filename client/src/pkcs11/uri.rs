//! PKCS#11 URIs (RFC 7512): the part of `pkcs11:token=…;object=…?module-path=…` virtgate
//! uses to find a private key on a token. Pure parsing, no token is touched here.
//!
//! Supported path attributes: `token`, `manufacturer`, `model`, `serial` (which token),
//! `slot-id` (which slot), `object` (the key's label, CKA_LABEL), `id` (CKA_ID, bytes) and
//! `type` (only `private`: the URI names a private key). Supported query attribute:
//! `module-path` (the module, when the profile names none). Every value may be
//! percent-encoded (`%20`, `%2F`, …); `id` usually is (`id=%01%02`).
//!
//! Refused with a reason: `pin-value` and `pin-source` (the PIN comes from the same sources
//! as a key passphrase, never from the URI, which lives in a config file), `module-name`,
//! `library-*`, `slot-description` / `slot-manufacturer`, another `type`, an attribute given
//! twice, and anything else unknown. Vendor attributes (`x-…`) are ignored, as RFC 7512 says.

use std::fmt;
use std::path::{Path, PathBuf};

/// What a `pkcs11:` URI says about a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// The URI as written, for messages.
    pub text: String,
    /// `token=`: the token's label (CKA token info label).
    pub token: Option<String>,
    /// `manufacturer=`: the token's manufacturer ID.
    pub manufacturer: Option<String>,
    /// `model=`: the token's model.
    pub model: Option<String>,
    /// `serial=`: the token's serial number (tells two tokens of one label apart).
    pub serial: Option<String>,
    /// `slot-id=`: the slot number.
    pub slot_id: Option<u64>,
    /// `object=`: the key's label (CKA_LABEL).
    pub object: Option<String>,
    /// `id=`: the key's CKA_ID, as bytes.
    pub id: Option<Vec<u8>>,
    /// `?module-path=`: the PKCS#11 module, used when the profile names none.
    pub module_path: Option<PathBuf>,
}

/// Why a URI cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriError {
    /// Not RFC 7512 syntax (or not a `pkcs11:` URI at all).
    Malformed(String),
    /// `pin-value` / `pin-source`: a PIN must not live in the URI.
    Pin(String),
    /// A valid attribute virtgate does not implement.
    Unsupported(String),
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UriError::Malformed(s) | UriError::Pin(s) | UriError::Unsupported(s) => f.write_str(s),
        }
    }
}

/// Whether a `key` setting is a PKCS#11 URI rather than a file (the scheme is
/// case-insensitive).
pub fn is_uri(key: &Path) -> bool {
    key.to_str()
        .and_then(|s| s.get(..7))
        .is_some_and(|p| p.eq_ignore_ascii_case("pkcs11:"))
}

impl Pkcs11Uri {
    /// Parse `pkcs11:…`.
    pub fn parse(text: &str) -> Result<Pkcs11Uri, UriError> {
        let malformed = |m: String| UriError::Malformed(m);
        let rest = text
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("pkcs11:"))
            .map(|_| &text[7..])
            .ok_or_else(|| malformed("it does not start with `pkcs11:`".into()))?;
        if let Some(c) = rest.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(malformed(format!(
                "it contains {c:?}, which must be percent-encoded"
            )));
        }
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut uri = Pkcs11Uri {
            text: text.to_owned(),
            ..Default::default()
        };
        let mut seen: Vec<&str> = Vec::new();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = split_attr(attr)?;
            if seen.contains(&name) {
                return Err(malformed(format!("`{name}` is given twice")));
            }
            seen.push(name);
            uri.path_attr(name, value)?;
        }
        for attr in query.into_iter().flat_map(|q| q.split('&')) {
            if attr.is_empty() {
                continue;
            }
            let (name, value) = split_attr(attr)?;
            uri.query_attr(name, value)?;
        }
        Ok(uri)
    }

    fn path_attr(&mut self, name: &str, value: &str) -> Result<(), UriError> {
        let text = || decode_text(name, value);
        match name {
            "token" => self.token = Some(text()?),
            "manufacturer" => self.manufacturer = Some(text()?),
            "model" => self.model = Some(text()?),
            "serial" => self.serial = Some(text()?),
            "object" => self.object = Some(text()?),
            "id" => self.id = Some(decode(name, value)?),
            "slot-id" => {
                let n = text()?;
                self.slot_id = Some(n.parse().map_err(|_| {
                    UriError::Malformed(format!("slot-id `{n}` is not a decimal number"))
                })?);
            }
            "type" => match text()?.as_str() {
                "private" => {}
                other @ ("public" | "cert" | "secret-key" | "data") => {
                    return Err(UriError::Unsupported(format!(
                        "type={other} names no private key; virtgate signs with `type=private` \
                         (or no type)"
                    )))
                }
                other => {
                    return Err(UriError::Malformed(format!(
                        "type `{other}` is not one of public, private, cert, secret-key, data"
                    )))
                }
            },
            "pin-value" | "pin-source" => return Err(pin_error(name)),
            "library-manufacturer"
            | "library-description"
            | "library-version"
            | "slot-description"
            | "slot-manufacturer" => {
                return Err(UriError::Unsupported(format!(
                    "the attribute `{name}` is not supported by virtgate"
                )))
            }
            _ if name.starts_with("x-") => {}
            _ => return Err(UriError::Malformed(format!("unknown attribute `{name}`"))),
        }
        Ok(())
    }

    fn query_attr(&mut self, name: &str, value: &str) -> Result<(), UriError> {
        match name {
            "module-path" => {
                self.module_path = Some(PathBuf::from(decode_text(name, value)?));
            }
            "pin-value" | "pin-source" => return Err(pin_error(name)),
            "module-name" => {
                return Err(UriError::Unsupported(
                    "`module-name` is not supported by virtgate: name the module's file with \
                     `module-path` or the profile's `pkcs11_module`"
                        .into(),
                ))
            }
            _ if name.starts_with("x-") => {}
            _ => {
                return Err(UriError::Malformed(format!(
                    "unknown query attribute `{name}`"
                )))
            }
        }
        Ok(())
    }

    /// Which token, in words: `token "alice" (serial 1234)`, or `any token`.
    pub fn describe_token(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.token {
            parts.push(format!("token \"{t}\""));
        }
        for (what, v) in [
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
        ] {
            if let Some(v) = v {
                parts.push(format!("{what} \"{v}\""));
            }
        }
        if let Some(s) = self.slot_id {
            parts.push(format!("slot {s}"));
        }
        if parts.is_empty() {
            "any token".into()
        } else {
            parts.join(", ")
        }
    }

    /// Which key, in words: `object "alice", id 01a2`, or `any private key`.
    pub fn describe_key(&self) -> String {
        let mut parts = Vec::new();
        if let Some(o) = &self.object {
            parts.push(format!("object \"{o}\""));
        }
        if let Some(id) = &self.id {
            parts.push(format!("id {}", hex(id)));
        }
        if parts.is_empty() {
            "any private key".into()
        } else {
            parts.join(", ")
        }
    }
}

fn pin_error(name: &str) -> UriError {
    UriError::Pin(format!(
        "`{name}` is not supported: the PIN never comes from the URI"
    ))
}

/// `name=value`; an attribute without `=` is malformed.
fn split_attr(attr: &str) -> Result<(&str, &str), UriError> {
    let (name, value) = attr
        .split_once('=')
        .ok_or_else(|| UriError::Malformed(format!("`{attr}` is not NAME=VALUE")))?;
    if name.is_empty() {
        return Err(UriError::Malformed(format!("`{attr}` has no name")));
    }
    Ok((name, value))
}

/// Percent-decode a value to bytes; a `%` not followed by two hex digits is an error.
fn decode(name: &str, value: &str) -> Result<Vec<u8>, UriError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hexpair = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    UriError::Malformed(format!(
                        "`{name}` has a `%` that is not followed by two hex digits"
                    ))
                })?;
            out.push(hexpair);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-decode a value that must be text (labels, paths).
fn decode_text(name: &str, value: &str) -> Result<String, UriError> {
    String::from_utf8(decode(name, value)?)
        .map_err(|_| UriError::Malformed(format!("`{name}` is not UTF-8 once decoded")))
}

/// The URI with the value of any `pin-value` replaced by `***`, for messages: a PIN
/// written into a URI by mistake is not repeated on the screen or in logs.
pub fn redacted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("pin-value=") {
        let after = i + "pin-value=".len();
        out.push_str(&rest[..after]);
        out.push_str("***");
        let tail = &rest[after..];
        let end = tail.find(['&', ';', '?']).unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Bytes as lowercase hex (CKA_ID in messages).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_object() {
        let u = Pkcs11Uri::parse("pkcs11:token=alice;object=tls%20key").unwrap();
        assert_eq!(u.token.as_deref(), Some("alice"));
        assert_eq!(u.object.as_deref(), Some("tls key"));
        assert_eq!(u.id, None);
        assert_eq!(u.describe_token(), "token \"alice\"");
        assert_eq!(u.describe_key(), "object \"tls key\"");
    }

    #[test]
    fn every_supported_attribute() {
        let u = Pkcs11Uri::parse(
            "PKCS11:token=A%3bB;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;\
             serial=0123abc;slot-id=7;object=k;id=%01%a2;type=private;x-vendor=1\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&x-other=2",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("A;B"));
        assert_eq!(u.manufacturer.as_deref(), Some("SoftHSM project"));
        assert_eq!(u.model.as_deref(), Some("SoftHSM v2"));
        assert_eq!(u.serial.as_deref(), Some("0123abc"));
        assert_eq!(u.slot_id, Some(7));
        assert_eq!(u.id.as_deref(), Some(&[0x01, 0xa2][..]));
        assert_eq!(
            u.module_path.as_deref(),
            Some(Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(u.describe_key(), "object \"k\", id 01a2");
        assert!(u.describe_token().contains("serial \"0123abc\", slot 7"));
    }

    #[test]
    fn empty_path_and_empty_value_are_valid() {
        let u = Pkcs11Uri::parse("pkcs11:").unwrap();
        assert_eq!(u.describe_token(), "any token");
        assert_eq!(u.describe_key(), "any private key");
        let u = Pkcs11Uri::parse("pkcs11:object=;").unwrap();
        assert_eq!(u.object.as_deref(), Some(""));
    }

    #[test]
    fn pins_are_refused() {
        for t in [
            "pkcs11:token=a?pin-value=1234",
            "pkcs11:token=a?pin-source=file:/x",
            "pkcs11:token=a;pin-value=1234",
        ] {
            let e = Pkcs11Uri::parse(t).unwrap_err();
            assert!(matches!(e, UriError::Pin(_)), "{t}: {e:?}");
            assert!(e.to_string().contains("never comes from the URI"));
        }
    }

    #[test]
    fn pins_are_not_repeated() {
        assert_eq!(
            redacted("pkcs11:token=a;pin-value=1234;object=b?pin-value=99&x-a=1"),
            "pkcs11:token=a;pin-value=***;object=b?pin-value=***&x-a=1"
        );
        assert_eq!(redacted("pkcs11:token=a"), "pkcs11:token=a");
    }

    #[test]
    fn malformed_uris() {
        let bad = |t: &str, says: &str| {
            let e = Pkcs11Uri::parse(t).unwrap_err();
            assert!(
                matches!(e, UriError::Malformed(_)) && e.to_string().contains(says),
                "{t}: {e}"
            );
        };
        bad("pkcs12:token=a", "does not start with `pkcs11:`");
        bad("token=a", "does not start with `pkcs11:`");
        bad("pkcs11:token", "`token` is not NAME=VALUE");
        bad("pkcs11:=a", "has no name");
        bad("pkcs11:token=a;token=b", "`token` is given twice");
        bad("pkcs11:object=a%2", "not followed by two hex digits");
        bad("pkcs11:object=a%zz", "not followed by two hex digits");
        bad("pkcs11:object=%ff", "not UTF-8");
        bad("pkcs11:token=my token", "must be percent-encoded");
        bad("pkcs11:tokn=a", "unknown attribute `tokn`");
        bad(
            "pkcs11:token=a?module=x",
            "unknown query attribute `module`",
        );
        bad("pkcs11:slot-id=one", "not a decimal number");
        bad("pkcs11:type=key", "is not one of");
    }

    #[test]
    fn unsupported_attributes_say_so() {
        for t in [
            "pkcs11:type=cert",
            "pkcs11:library-manufacturer=x",
            "pkcs11:token=a?module-name=softhsm2",
        ] {
            let e = Pkcs11Uri::parse(t).unwrap_err();
            assert!(matches!(e, UriError::Unsupported(_)), "{t}: {e:?}");
        }
    }

    #[test]
    fn key_settings_that_are_uris() {
        assert!(is_uri(Path::new("pkcs11:token=a")));
        assert!(is_uri(Path::new("PKCS11:token=a")));
        assert!(!is_uri(Path::new("/home/a/pkcs11:x")));
        assert!(!is_uri(Path::new("alice.key")));
        assert!(!is_uri(Path::new("pkcs1")));
    }
}
